"""`psma-node audit export`: every event in a time window, as CSV or JSON lines; the export is audited."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from sqlalchemy import select

from db.audit import os_user, record
from db.models import AuditEvent
from db.session import make_engine, make_session_factory, transaction
from dicom_node.cli.main import cli
from dicom_node.cli.times import parse_time
from tests.support.db import migrate


@pytest.fixture
def node(db_url: str, tmp_path: Path):
    migrate(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    old = dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone.utc)
    with transaction(sessions) as session:
        session.add(AuditEvent(created_at=old, category="instance", action="stored", study_uid="1.2.old"))
        record(
            session,
            "instance",
            "refused",
            outcome="refused",
            reason="instance too large: 3 GB",
            study_uid="1.2.3",
            peer="10.1.1.1",
            patient_name="Doe^Jane",
            size=3,
        )
        record(session, "admin", "login", actor="alice")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"database": {"url": db_url, "auto_upgrade": False}}))
    yield config, sessions
    engine.dispose()


def _export(config: Path, *args: str) -> str:
    result = CliRunner().invoke(
        cli, ["--config", str(config), "audit", "export", *args], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_jsonl_export_of_recent_events(node) -> None:
    config, _ = node
    lines = [json.loads(line) for line in _export(config, "--since", "1d").splitlines()]
    assert [(e["category"], e["action"]) for e in lines] == [("instance", "refused"), ("admin", "login")]
    refused = lines[0]
    assert refused["reason"] == "instance too large: 3 GB" and refused["peer"] == "10.1.1.1"
    assert refused["detail"] == {"patient_name": "Doe^Jane", "size": 3}
    assert refused["created_at"].endswith("+00:00")


def test_csv_export_to_a_file_with_window_and_category(node, tmp_path: Path) -> None:
    config, _ = node
    out = tmp_path / "audit.csv"
    _export(config, "--since", "2023-12-31", "--until", "2024-01-02", "--format", "csv", "--output", str(out))
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [(r["category"], r["action"], r["study_uid"]) for r in rows] == [("instance", "stored", "1.2.old")]
    everything = tmp_path / "all.csv"
    _export(
        config,
        "--since",
        "2000-01-01",
        "--category",
        "instance",
        "--format",
        "csv",
        "--output",
        str(everything),
    )
    rows = list(csv.DictReader(io.StringIO(everything.read_text())))
    assert [r["action"] for r in rows] == ["stored", "refused"]
    assert json.loads(rows[1]["detail"]) == {"patient_name": "Doe^Jane", "size": 3}


def test_export_itself_is_audited_with_the_os_user(node) -> None:
    config, sessions = node
    _export(config, "--since", "7d", "--format", "jsonl")
    with sessions() as session:
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "audit-exported")).one()
    assert (event.category, event.actor, event.detail["events"]) == ("admin", os_user(), 2)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_unreadable_time_is_refused_with_the_accepted_forms(node) -> None:
    config, _ = node
    result = CliRunner().invoke(cli, ["--config", str(config), "audit", "export", "--since", "last tuesday"])
    assert result.exit_code == 2
    assert "neither an ISO date/time" in result.output and "7d" in result.output


def test_parse_time_forms() -> None:
    now = dt.datetime(2024, 5, 10, 12, tzinfo=dt.timezone.utc)
    assert parse_time("2d", now=now) == dt.datetime(2024, 5, 8, 12, tzinfo=dt.timezone.utc)
    assert parse_time("90m", now=now) == dt.datetime(2024, 5, 10, 10, 30, tzinfo=dt.timezone.utc)
    assert parse_time("2024-05-01") == dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc)
    assert parse_time("2024-05-01T08:00:00+02:00") == dt.datetime(2024, 5, 1, 6, tzinfo=dt.timezone.utc)
