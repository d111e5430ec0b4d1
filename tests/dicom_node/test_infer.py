"""The infer stage on a real SQLite database: a job whose inputs are gone fails clearly and audited, and a
job taken away while running leaves the study to its new generation."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Job, Result, Study
from dicom_node.assemble import Assembler
from dicom_node.config import Settings
from dicom_node.infer import run_job
from dicom_node.jobs import ClaimedJob, claim_next_job
from tests.dicom_node.assemble.rows import add_ct, add_pet, add_study

WORKER = "worker-test"


def _settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({
        "assembly": {"settle_seconds": 0},
        "models": {"models_dir": str(tmp_path / "models")},
        "storage": {"directory": str(tmp_path / "storage"), "results_directory": str(tmp_path / "results")},
    })


def _claimed(settings: Settings, sessions: sessionmaker[Session]) -> tuple[int, ClaimedJob]:
    """A queued study whose instance rows point at files that do not exist, its job claimed by WORKER."""
    study_id, _ = add_study(sessions)
    add_pet(sessions, study_id)
    add_ct(sessions, study_id)
    Assembler().tick(settings, sessions)
    job = claim_next_job(sessions, WORKER, lease_seconds=60)
    assert job is not None and job.study_id == study_id
    return study_id, job


def test_a_job_whose_stored_files_are_gone_fails_and_the_study_says_why(
    sqlite_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    study_id, job = _claimed(settings, sqlite_sessions)
    assert run_job(settings, sqlite_sessions, job, WORKER, "cpu") == "failed"
    with sqlite_sessions() as session:
        study = session.get(Study, study_id)
        stored = session.get(Job, job.id)
        failed = session.scalars(select(AuditEvent).where(AuditEvent.action == "failed",
                                                          AuditEvent.category == "job")).one()
        results = session.scalars(select(Result)).all()
    reason = f"InputsMissing: no stored files left for series {job.pet_series_uid}"
    assert study is not None and (study.state, study.state_reason) == ("failed", reason)
    assert stored is not None and (stored.state, stored.error) == ("failed", reason)
    assert failed.reason == reason and failed.detail["worker_id"] == WORKER
    assert results == []


def test_a_failure_of_a_job_taken_away_while_running_is_discarded_not_recorded_on_the_study(
    sqlite_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    study_id, job = _claimed(settings, sqlite_sessions)
    add_pet(sqlite_sessions, study_id, slices=1)
    Assembler().tick(settings, sqlite_sessions)  # new data: the study is reopened and the running job cancelled
    run_job(settings, sqlite_sessions, job, WORKER, "cpu")
    with sqlite_sessions() as session:
        study = session.get(Study, study_id)
        stored = session.get(Job, job.id)
        job_actions = [e.action for e in session.scalars(
            select(AuditEvent).where(AuditEvent.category == "job").order_by(AuditEvent.id))]
    assert study is not None and study.state != "failed" and study.generation == 2
    assert stored is not None and stored.state == "cancelled"
    assert "discarded" in job_actions and "failed" not in job_actions
