"""Retention deletes only the images of studies delivered long enough ago; rows and audit stay."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from db.models import AuditEvent, Instance, Study
from db.session import make_engine, make_session_factory, transaction
from dicom_node.retention import retention_tick, run_retention
from tests.db.seed import seed_study
from tests.support.db import migrate
from tests.support.settings import make_settings
from tests.support.node import REPO

NOW = dt.datetime.now(dt.timezone.utc)
OLD = NOW - dt.timedelta(days=40)


@pytest.fixture
def node(db_url: str, tmp_path: Path):
    """Four studies: delivered long ago, delivered yesterday, delivery failed, never analysed."""
    migrate(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    settings = make_settings(tmp_path, db_url)
    settings.retention.keep_days = 30
    dirs = {"storage": tmp_path / "storage", "results": tmp_path / "results"}
    with transaction(sessions) as session:
        studies = {
            "old": seed_study(session, accession="OLD", delivered_at=OLD, **dirs),
            "recent": seed_study(
                session, accession="RECENT", delivered_at=NOW - dt.timedelta(days=1), **dirs
            ),
            "failed": seed_study(session, accession="FAILED", outbox_state="failed", **dirs),
            "rejected": seed_study(session, accession="REJ", state="rejected", reason="not PSMA", **dirs),
        }
    yield settings, sessions, studies
    engine.dispose()


def _study(sessions, uid: str) -> Study:
    with sessions() as session:
        return session.scalars(select(Study).where(Study.study_uid == uid)).one()


def test_purges_only_studies_delivered_before_keep_days(node) -> None:
    settings, sessions, studies = node
    report = run_retention(settings, sessions, dry_run=False, actor="tester")
    assert [s.accession_number for s in report.studies] == ["OLD"]
    assert report.files_deleted == 3 and report.bytes_freed == 3 * 1132
    assert not any(p.exists() for p in studies["old"].instance_paths)
    assert not (Path(settings.storage.directory) / studies["old"].study_uid).exists(), "empty folders removed"
    for kept in ("recent", "failed", "rejected"):
        assert all(p.exists() for p in studies[kept].instance_paths), kept
    assert studies["old"].sc_path.exists(), "result objects are not instance files and stay"

    old = _study(sessions, studies["old"].study_uid)
    assert old.purged_at is not None and old.state == "done"
    with sessions() as session:
        rows = session.scalars(select(Instance).where(Instance.study_id == old.id)).all()
        assert len(rows) == 3 and all(r.missing_file for r in rows), "rows stay, marked as without file"
        purged = session.scalars(select(AuditEvent).where(AuditEvent.action == "purged")).one()
        assert (purged.study_uid, purged.actor, purged.detail["files_deleted"]) == (
            old.study_uid,
            "tester",
            3,
        )
        assert "older than 30 days" in purged.reason

    again = run_retention(settings, sessions, dry_run=False, actor="tester")
    assert again.studies == [], "a purged study is not purged twice"


def test_dry_run_lists_without_deleting(node) -> None:
    settings, sessions, studies = node
    report = run_retention(settings, sessions, dry_run=True, actor="tester")
    assert [s.accession_number for s in report.studies] == ["OLD"]
    assert len(report.studies[0].files) == 3 and report.files_deleted == 0
    assert all(p.exists() for p in studies["old"].instance_paths)
    assert _study(sessions, studies["old"].study_uid).purged_at is None


def test_reopened_study_is_not_purged(node) -> None:
    settings, sessions, studies = node
    with transaction(sessions) as session:
        session.scalars(
            select(Study).where(Study.study_uid == studies["old"].study_uid)
        ).one().state = "receiving"
    assert run_retention(settings, sessions, dry_run=False, actor="tester").studies == []
    assert all(p.exists() for p in studies["old"].instance_paths)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_tick_does_nothing_unless_enabled(node) -> None:
    settings, sessions, studies = node
    retention_tick(settings, sessions)
    assert all(p.exists() for p in studies["old"].instance_paths)
    settings.retention.enabled = True
    retention_tick(settings, sessions)
    assert not any(p.exists() for p in studies["old"].instance_paths)
    with sessions() as session:
        purged = session.scalars(select(AuditEvent).where(AuditEvent.action == "purged")).one()
        assert purged.actor.startswith("system:retention")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cli_dry_run_then_run(node, tmp_path: Path) -> None:
    settings, sessions, studies = node
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {
                    "directory": str(settings.storage.directory),
                    "results_directory": str(settings.storage.results_directory),
                },
                "database": {"url": settings.database.url.get_secret_value(), "auto_upgrade": False},
                "retention": {"enabled": True, "keep_days": 30},
            }
        )
    )
    command = [sys.executable, "-m", "dicom_node.cli.main", "--config", str(config), "retention", "run"]
    dry = subprocess.run([*command, "--dry-run"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert f"would purge {studies['old'].study_uid} (accession OLD" in dry.stdout
    assert "would purge 1 studies, 3 files" in dry.stdout
    assert all(p.exists() for p in studies["old"].instance_paths)

    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "purged 1 studies, 3 files" in done.stdout
    assert not any(p.exists() for p in studies["old"].instance_paths)
    with sessions() as session:
        purged = session.scalars(select(AuditEvent).where(AuditEvent.action == "purged")).one()
        assert purged.actor and not purged.actor.startswith("system")
