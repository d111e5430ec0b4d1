"""Worker processes on a real SQLite database: a queued job is claimed and run by a spawned worker, and a
stopped pool leaves no heartbeat behind."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Job, WorkerHeartbeat
from db.session import make_engine, make_session_factory
from dicom_node.assemble import Assembler
from dicom_node.config import Settings
from dicom_node.worker import WorkerPool
from tests.dicom_node.assemble.rows import add_ct, add_pet, add_study
from tests.support.db import migrate
from tests.support.wait import wait_for


def _settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({
        "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
        "assembly": {"settle_seconds": 0},
        "workers": {"count": 1, "lease_seconds": 30},
        "models": {"models_dir": str(tmp_path / "models")},
        "storage": {"directory": str(tmp_path / "storage"), "results_directory": str(tmp_path / "results")},
        "logging": {"format": "json", "level": "INFO", "file": str(tmp_path / "worker.log")},
    })


def _finished(sessions: sessionmaker[Session], job_id: int) -> Job | None:
    with sessions() as session:
        job = session.get(Job, job_id)
        return job if job is not None and job.finished_at is not None else None


def test_a_worker_process_claims_and_runs_a_queued_job_and_stopping_removes_its_heartbeat(
    tmp_path: Path,
) -> None:
    settings = _settings(tmp_path)
    url = settings.database.url.get_secret_value()
    migrate(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    log_file = tmp_path / "worker.log"
    try:
        study_id, study_uid = add_study(sessions)
        add_pet(sessions, study_id)  # instance rows whose files do not exist: the job must fail, clearly
        add_ct(sessions, study_id)
        Assembler().tick(settings, sessions)
        with sessions() as session:
            job_id = session.scalars(select(Job.id).where(Job.study_id == study_id)).one()
        pool = WorkerPool(settings, sessions, 1)
        pool.start()
        try:
            job = wait_for(lambda: _finished(sessions, job_id), timeout=120,
                           what="the worker to finish the job",
                           log=lambda: log_file.read_text() if log_file.exists() else "")
            with sessions() as session:
                beating = session.scalars(select(WorkerHeartbeat.id)).all()
        finally:
            pool.stop()
        assert job.state == "failed" and "no stored files left" in (job.error or "")
        assert job.worker_id is not None and job.worker_id.split(":")[1] == "w0"
        assert beating == [job.worker_id]
        with sessions() as session:
            assert session.scalars(select(WorkerHeartbeat)).all() == []
            failed = session.scalars(select(AuditEvent).where(AuditEvent.category == "job",
                                                              AuditEvent.action == "failed")).one()
        assert failed.study_uid == study_uid and failed.actor == job.worker_id
    finally:
        engine.dispose()
