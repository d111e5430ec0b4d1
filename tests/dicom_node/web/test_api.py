"""The JSON API and pages over a real database: access control, content, clinical registration, probes."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from db.models import AuditEvent, ClinicalInfo
from dicom_node.web.app import create_app
from tests.db.seed import Seeded
from tests.support.settings import PASSWORD, TOKEN, make_settings

BEARER = {"Authorization": f"Bearer {TOKEN}"}
# Queries and writes run on both databases; access-control and rendering details on SQLite only.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _events(seeded: Seeded, action: str) -> list[AuditEvent]:
    with seeded.sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


@SQLITE_ONLY
def test_nothing_is_served_without_authentication(client: TestClient, seeded: Seeded) -> None:
    assert client.get("/api/studies").status_code == 401
    assert client.get("/metrics").status_code == 401
    page = client.get("/studies", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=/studies"
    bad = client.get("/api/studies", headers={"Authorization": "Bearer not-the-token"})
    assert bad.status_code == 401
    refused = _events(seeded, "api-refused")
    assert refused and refused[-1].reason == "invalid bearer token"


def test_bearer_token_lists_studies_with_state_and_probability(client: TestClient, seeded: Seeded) -> None:
    studies = client.get("/api/studies", headers=BEARER).json()
    by_accession = {s["accession_number"]: s for s in studies}
    assert by_accession["ACC-DONE"]["state"] == "done"
    assert by_accession["ACC-DONE"]["probability"] == 0.83
    assert by_accession["ACC-DONE"]["finding"] == "present"
    assert by_accession["ACC-FAIL"]["state"] == "failed"
    only_failed = client.get("/api/studies?state=failed", headers=BEARER).json()
    assert [s["accession_number"] for s in only_failed] == ["ACC-FAIL"]


def test_study_detail_has_timeline_series_jobs_results_and_images(client: TestClient, seeded: Seeded) -> None:
    detail = client.get("/api/studies/ACC-DONE", headers=BEARER).json()
    assert detail["study"]["study_uid"] == seeded.done.study_uid
    assert [e["action"] for e in detail["events"]] == [
        "stored",
        "done",
        "finished",
        "created",
        "sent",
        "sent",
    ]
    assert detail["series"][0]["instances"] == 3 and detail["series"][0]["modality"] == "PT"
    assert detail["jobs"][0]["timings"]["model"] == 30.0
    image_url = detail["results"][0]["images"][0]
    assert image_url.endswith(f"{seeded.done.sc_sop_uid}.png")
    assert client.get("/api/studies/1.2.3.404", headers=BEARER).status_code == 404


@SQLITE_ONLY
def test_login_form_sets_a_session_that_opens_pages(client: TestClient, seeded: Seeded) -> None:
    wrong = client.post("/login", data={"username": "alice", "password": "nope", "next": "/failures"})
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    ok = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "next": "/failures"},
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == "/failures"
    page = client.get("/failures")
    assert page.status_code == 200 and "RadiopharmaceuticalStartDateTime missing" in page.text
    assert "NOT FOR DIAGNOSTIC USE" in page.text
    outcomes = [(e.outcome, e.actor) for e in _events(seeded, "login")]
    assert outcomes == [("refused", "alice"), ("ok", "alice")]


@SQLITE_ONLY
def test_login_redirect_stays_on_this_site(client: TestClient) -> None:
    answer = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "next": "//evil.example/"},
        follow_redirects=False,
    )
    assert answer.headers["location"] == "/studies"


@SQLITE_ONLY
def test_sc_image_is_served_as_png(client: TestClient, seeded: Seeded) -> None:
    client.post("/login", data={"username": "alice", "password": PASSWORD})
    png = client.get(f"/studies/{seeded.done.study_uid}/images/{seeded.done.sc_sop_uid}.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert client.get(f"/studies/{seeded.done.study_uid}/images/1.2.3.png").status_code == 404


@SQLITE_ONLY
def test_sc_image_found_by_scanning_when_outbox_has_no_row(db_url: str, tmp_path: Path) -> None:
    """No destination configured: no outbox row, the SC is found in the results folder by its series."""
    from db.session import make_engine, make_session_factory, transaction
    from tests.db.seed import seed_study
    from tests.support.db import migrate

    migrate(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    settings = make_settings(tmp_path, db_url)
    with transaction(sessions) as session:
        study = seed_study(
            session, storage=tmp_path / "storage", results=tmp_path / "results", outbox_state=None
        )
    with TestClient(create_app(settings, sessions)) as client:
        detail = client.get(f"/api/studies/{study.study_uid}", headers=BEARER).json()
        assert detail["results"][0]["images"] == [f"/studies/{study.study_uid}/images/{study.sc_sop_uid}.png"]
    engine.dispose()


def test_ris_registers_clinical_metadata_with_audit(client: TestClient, seeded: Seeded) -> None:
    answer = client.post(
        "/api/clinical",
        headers=BEARER,
        json={"accession_number": "ACC-NEW", "psa_ng_ml": 1.7, "prostatectomy": True},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["psa_ng_ml"] == 1.7
    with seeded.sessions() as session:
        info = session.scalars(select(ClinicalInfo)).one()
        assert (info.accession_number, info.psa_ng_ml, info.prostatectomy, info.source) == (
            "ACC-NEW",
            1.7,
            True,
            "http",
        )
    actor = client.get("/api/studies", headers=BEARER)  # any call: the token's actor is stable
    assert actor.status_code == 200
    registered = [e for e in _events(seeded, "clinical-registered")]
    assert len(registered) == 1 and registered[0].actor.startswith("token:")
    assert TOKEN not in registered[0].actor


def test_bad_clinical_input_is_refused_with_reason_and_audited(client: TestClient, seeded: Seeded) -> None:
    negative = client.post("/api/clinical", headers=BEARER, json={"accession_number": "A1", "psa_ng_ml": -3})
    assert negative.status_code == 422 and "psa_ng_ml" in negative.json()["detail"]
    empty = client.post("/api/clinical", headers=BEARER, json={"accession_number": "A1"})
    assert empty.status_code == 422 and "psa_ng_ml, prostatectomy or both" in empty.json()["detail"]
    typo = client.post("/api/clinical", headers=BEARER, json={"accession": "A1", "psa_ng_ml": 2})
    assert typo.status_code == 422 and "accession_number" in typo.json()["detail"]
    unauthenticated = client.post("/api/clinical", json={"accession_number": "A1", "psa_ng_ml": 2})
    assert unauthenticated.status_code == 401
    with seeded.sessions() as session:
        assert session.scalars(select(ClinicalInfo)).all() == []
    reasons = [e.reason for e in _events(seeded, "api-refused")] + [
        e.reason for e in _events(seeded, "clinical-refused")
    ]
    assert any("psa_ng_ml" in (r or "") for r in reasons)
    assert any("neither psa_ng_ml nor prostatectomy" in (r or "") for r in reasons)


@SQLITE_ONLY
def test_dashboard_form_registers_clinical_as_the_logged_in_user(client: TestClient, seeded: Seeded) -> None:
    client.post("/login", data={"username": "alice", "password": PASSWORD})
    page = client.get(f"/studies/{seeded.done.study_uid}")
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    forged = client.post(
        f"/studies/{seeded.done.study_uid}/clinical",
        data={"csrf": "forged", "psa_ng_ml": "4,2", "prostatectomy": "no"},
    )
    assert forged.status_code == 403
    posted = client.post(
        f"/studies/{seeded.done.study_uid}/clinical",
        data={"csrf": csrf, "psa_ng_ml": "4,2", "prostatectomy": "no"},
        follow_redirects=False,
    )
    assert posted.status_code == 303
    with seeded.sessions() as session:
        info = session.scalars(select(ClinicalInfo)).one()
        assert (info.accession_number, info.psa_ng_ml, info.prostatectomy, info.source) == (
            "ACC-DONE",
            4.2,
            False,
            "dashboard",
        )
    assert [e.actor for e in _events(seeded, "clinical-registered")] == ["alice"]


@SQLITE_ONLY
def test_anonymous_access_only_when_allowed(seeded: Seeded, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, seeded.settings.database.url.get_secret_value(), allow_anonymous=True)
    with TestClient(create_app(settings, seeded.sessions)) as client:
        assert client.get("/api/studies").status_code == 200
        assert client.get("/studies").status_code == 200


@SQLITE_ONLY
def test_healthz_reports_ok_and_the_reason_when_storage_is_unusable(seeded: Seeded, tmp_path: Path) -> None:
    with TestClient(create_app(seeded.settings, seeded.sessions)) as client:
        ok = client.get("/healthz")
        assert ok.status_code == 200 and ok.text == "ok\n"
    broken = seeded.settings.model_copy(deep=True)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    broken.storage.directory = blocker
    with TestClient(create_app(broken, seeded.sessions)) as client:
        bad = client.get("/healthz")
        assert bad.status_code == 503
        assert f"{blocker} is not writable" in bad.text


def test_healthz_503_when_the_database_does_not_answer(tmp_path: Path) -> None:
    from db.session import make_engine, make_session_factory

    url = "postgresql+psycopg2://nobody@127.0.0.1:1/none"
    settings = make_settings(tmp_path, url)
    engine = make_engine(url)
    with TestClient(create_app(settings, make_session_factory(engine))) as client:
        bad = client.get("/healthz")
    assert bad.status_code == 503 and "database does not answer" in bad.text
    engine.dispose()


def test_pages_render_for_a_logged_in_user(client: TestClient, seeded: Seeded) -> None:
    client.post("/login", data={"username": "alice", "password": PASSWORD})
    studies = client.get("/studies?state=done")
    assert "ACC-DONE" in studies.text and "ACC-FAIL" not in studies.text and "83.0 %" in studies.text
    assert "ACC-FAIL" in client.get("/studies?q=FAIL").text
    study = client.get(f"/studies/{seeded.done.study_uid}")
    assert "Sentinel^Zebra" in study.text and f"{seeded.done.sc_sop_uid}.png" in study.text
    assert "delivered" in client.get("/outbox").text
    health = client.get("/health")
    assert "worker-1" in health.text and "alive" in health.text and "Disk free" in health.text
    assert client.get("/studies/1.2.3.404").status_code == 200


@SQLITE_ONLY
def test_clinical_refusals_give_db_clinical_reason_in_api_field_names(
    client: TestClient, seeded: Seeded
) -> None:
    too_high = client.post(
        "/api/clinical", headers=BEARER, json={"accession_number": "A1", "psa_ng_ml": 200000}
    )
    assert too_high.status_code == 422
    assert too_high.json()["detail"] == "psa_ng_ml: PSA must be between 0 and 100000 ng/ml, got 200000.0"
    client.post("/login", data={"username": "alice", "password": PASSWORD})
    page = client.get(f"/studies/{seeded.done.study_uid}")
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    typed = client.post(
        f"/studies/{seeded.done.study_uid}/clinical", data={"csrf": csrf, "psa_ng_ml": "four"}
    )
    assert typed.status_code == 422 and typed.json()["detail"] == "invalid input: psa_ng_ml: not a number"
    refused = _events(seeded, "clinical-refused")
    reasons = [e.reason for e in refused]
    assert reasons == [too_high.json()["detail"], "invalid input: psa_ng_ml: not a number"]
    assert refused[0].actor.startswith("token:") and refused[1].actor == "alice"
    with seeded.sessions() as session:
        assert session.scalars(select(ClinicalInfo)).all() == []
