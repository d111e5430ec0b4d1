"""/metrics is derived from the database at scrape time, so it counts what every process recorded."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from db.audit import record
from db.session import make_engine, make_session_factory, transaction
from dicom_node.metrics import make_registry, reason_class
from dicom_node.web.app import create_app
from tests.db.seed import seed_study, seed_worker
from tests.support.db import migrate
from tests.support.settings import TOKEN, make_settings


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def scrape(db_url: str, tmp_path: Path):
    migrate(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    settings = make_settings(tmp_path, db_url)
    with transaction(sessions) as session:
        seed_study(
            session,
            storage=tmp_path / "storage",
            results=tmp_path / "results",
            delivered_at=dt.datetime.now(dt.timezone.utc),
        )
        seed_study(
            session,
            storage=tmp_path / "storage",
            results=tmp_path / "results",
            accession="B",
            state="rejected",
            reason="tracer: FDG is not an accepted tracer",
            instances=2,
        )
        for reason in (
            "calling AE not allowed: EVIL",
            "calling AE not allowed: EVIL2",
            "instance too large: 3 GB > 2 GB",
        ):
            record(
                session,
                "association" if "AE" in reason else "instance",
                "refused",
                outcome="refused",
                reason=reason,
            )
        seed_worker(session, worker_id="w-alive", age_seconds=1)
        seed_worker(session, worker_id="w-dead", age_seconds=3600)
    registry = make_registry(settings, sessions)
    yield lambda: _samples(generate_latest(registry).decode())
    engine.dispose()


def test_metrics_count_received_instances_and_bytes(scrape) -> None:
    samples = scrape()
    assert samples[("psma_node_instances_received_total", (("modality", "PT"),))] == 5
    assert samples[("psma_node_received_bytes_total", (("modality", "PT"),))] == 5 * 1132
    assert samples[("psma_node_database_up", ())] == 1


def test_metrics_group_refusals_by_reason_class(scrape) -> None:
    samples = scrape()
    assert (
        samples[
            ("psma_node_refusals_total", (("category", "association"), ("reason", "calling AE not allowed")))
        ]
        == 2
    )
    assert (
        samples[("psma_node_refusals_total", (("category", "instance"), ("reason", "instance too large")))]
        == 1
    )


def test_metrics_studies_queue_deliveries_and_workers(scrape) -> None:
    samples = scrape()
    assert samples[("psma_node_studies", (("state", "done"),))] == 1
    assert samples[("psma_node_studies", (("state", "rejected"),))] == 1
    assert samples[("psma_node_queue_depth", ())] == 0
    assert samples[("psma_node_outbox_items", (("destination", "pacs"), ("state", "delivered")))] == 2
    assert samples[("psma_node_delivery_attempts_total", (("outcome", "ok"),))] == 2
    assert samples[("psma_node_workers", (("liveness", "alive"),))] == 1
    assert samples[("psma_node_workers", (("liveness", "stale"),))] == 1


def test_stage_latency_histograms_come_from_job_timings(scrape) -> None:
    samples = scrape()
    assert samples[("psma_node_stage_seconds_count", (("stage", "model"),))] == 1
    assert samples[("psma_node_stage_seconds_sum", (("stage", "model"),))] == 30.0
    assert samples[("psma_node_stage_seconds_bucket", (("le", "10.0"), ("stage", "model")))] == 0
    assert samples[("psma_node_stage_seconds_bucket", (("le", "30.0"), ("stage", "model")))] == 1
    assert samples[("psma_node_stage_seconds_sum", (("stage", "job_total"),))] == 42.0
    assert samples[("psma_node_stage_seconds_sum", (("stage", "queue_wait"),))] == 5.0


def test_new_rows_show_up_at_the_next_scrape(scrape, db_url: str) -> None:
    key = ("psma_node_audit_events_total", (("category", "admin"), ("outcome", "ok")))
    before = scrape().get(key, 0)
    engine = make_engine(db_url)
    with transaction(make_session_factory(engine)) as session:
        record(session, "admin", "login", actor="alice")
    engine.dispose()
    assert scrape()[key] == before + 1


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_metrics_endpoint_needs_auth_unless_public(db_url: str, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    migrate(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    with TestClient(create_app(make_settings(tmp_path, db_url), sessions)) as client:
        assert client.get("/metrics").status_code == 401
        ok = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and "psma_node_queue_depth 0.0" in ok.text
    with TestClient(create_app(make_settings(tmp_path, db_url, public_metrics=True), sessions)) as client:
        assert client.get("/metrics").status_code == 200
    engine.dispose()


def test_metrics_report_database_down_instead_of_failing(tmp_path: Path) -> None:
    url = "postgresql+psycopg2://nobody@127.0.0.1:1/none"
    engine = make_engine(url)
    registry = make_registry(make_settings(tmp_path, url), make_session_factory(engine))
    assert _samples(generate_latest(registry).decode())[("psma_node_database_up", ())] == 0
    engine.dispose()


def test_reason_class_keeps_labels_bounded() -> None:
    assert reason_class("calling AE not allowed: X") == "calling AE not allowed"
    assert reason_class(None) == "unspecified"
    assert len(reason_class("x" * 500)) == 60
