"""The job queue in the database: atomic claims under a renewable lease, release, re-queue, cancel.

Workers in several processes (and on several machines sharing PostgreSQL) take jobs from the same table.
A claim is a conditional UPDATE (state 'queued' -> 'running') whose row count says who won; on PostgreSQL
candidates are picked with SELECT ... FOR UPDATE SKIP LOCKED so claimers do not queue behind each other. A
live worker renews its lease; a job whose lease ran out (its worker died) goes back to the queue, with the
attempt counted, until max_attempts, and then fails with that reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from db import audit
from db.clock import utcnow
from db.models import Job, JobState, Study, StudyState
from db.session import transaction
from dicom_node.config import Settings
from dicom_node.study_state import transition
from dicom_node.wake import JOBS, ring_on_commit

log = logging.getLogger(__name__)

CLAIM_CANDIDATES = 5
"""Queued jobs looked at per claim attempt on SQLite (the first one whose UPDATE wins is taken)."""


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker now holds; everything the analysis stage needs to find its inputs."""

    id: int
    study_id: int
    study_uid: str
    generation: int
    pet_series_uid: str
    ct_series_uid: str
    attempts: int
    flags: dict[str, Any]


def _study_for(session: Session, job: Job) -> Study | None:
    """The job's study if the job still belongs to its current generation."""
    study = session.get(Study, job.study_id)
    if study is None or study.generation != job.generation:
        return None
    return study


def claim_next_job(
    sessions: sessionmaker[Session], worker_id: str, lease_seconds: float
) -> ClaimedJob | None:
    """Take the oldest queued job, or None; exactly one of several concurrent claimers gets a given job."""
    with transaction(sessions) as session:
        query = select(Job.id).where(Job.state == JobState.QUEUED.value).order_by(Job.created_at, Job.id)
        if session.get_bind().dialect.name == "postgresql":
            query = query.limit(1).with_for_update(skip_locked=True)
        else:
            query = query.limit(CLAIM_CANDIDATES)
        for job_id in session.scalars(query).all():
            now = utcnow()
            won = (
                cast("CursorResult[Any]", session.execute(
                    update(Job)
                    .where(Job.id == job_id, Job.state == JobState.QUEUED.value)
                    .values(
                        state=JobState.RUNNING.value,
                        worker_id=worker_id,
                        started_at=now,
                        finished_at=None,
                        lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                        attempts=Job.attempts + 1,
                    )
                    .execution_options(synchronize_session=False)
                )).rowcount
                == 1
            )
            if not won:
                continue
            job = session.get(Job, job_id)
            assert job is not None
            study = _study_for(session, job)
            if study is None or study.state != StudyState.QUEUED.value:
                _cancel(session, job, "study moved on before the job started", study_uid=None)
                continue
            transition(
                session,
                study,
                StudyState.RUNNING,
                reason=f"job {job.id} claimed by {worker_id}",
                rule="job-claimed",
                actor=worker_id,
                job_id=job.id,
                attempt=job.attempts,
            )
            audit.record(
                session,
                "job",
                "claimed",
                study_uid=study.study_uid,
                actor=worker_id,
                job_id=job.id,
                attempt=job.attempts,
                generation=job.generation,
            )
            log.info(
                "job claimed",
                extra={
                    "job_id": job.id,
                    "study_uid": study.study_uid,
                    "worker_id": worker_id,
                    "attempt": job.attempts,
                },
            )
            return ClaimedJob(
                id=job.id,
                study_id=study.id,
                study_uid=study.study_uid,
                generation=job.generation,
                pet_series_uid=job.pet_series_uid or "",
                ct_series_uid=job.ct_series_uid or "",
                attempts=job.attempts,
                flags=dict(job.flags or {}),
            )
    return None


def renew_lease(sessions: sessionmaker[Session], job_id: int, worker_id: str, lease_seconds: float) -> bool:
    """Extend the lease; False when the job is no longer this worker's (cancelled or re-queued)."""
    with transaction(sessions) as session:
        return (
            cast("CursorResult[Any]", session.execute(
                update(Job)
                .where(Job.id == job_id, Job.worker_id == worker_id, Job.state == JobState.RUNNING.value)
                .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
                .execution_options(synchronize_session=False)
            )).rowcount
            == 1
        )


def finish_job(
    session: Session,
    job_id: int,
    worker_id: str,
    state: JobState,
    *,
    error: str | None = None,
    timings: dict[str, float] | None = None,
) -> bool:
    """Close a job this worker holds (in the caller's transaction); False if it was taken away meanwhile."""
    values: dict[str, Any] = {
        "state": state.value,
        "finished_at": utcnow(),
        "lease_expires_at": None,
        "error": error,
    }
    if timings is not None:
        values["timings"] = timings
    return (
        cast("CursorResult[Any]", session.execute(
            update(Job)
            .where(Job.id == job_id, Job.worker_id == worker_id, Job.state == JobState.RUNNING.value)
            .values(**values)
            .execution_options(synchronize_session=False)
        )).rowcount
        == 1
    )


def _cancel(session: Session, job: Job, reason: str, study_uid: str | None) -> None:
    session.execute(
        update(Job)
        .where(Job.id == job.id)
        .values(state=JobState.CANCELLED.value, finished_at=utcnow(), lease_expires_at=None, error=reason)
        .execution_options(synchronize_session=False)
    )
    audit.record(
        session,
        "job",
        "cancelled",
        outcome="cancelled",
        reason=reason,
        study_uid=study_uid,
        job_id=job.id,
        generation=job.generation,
        worker_id=job.worker_id,
    )


def cancel_older_jobs(session: Session, study: Study, reason: str) -> list[int]:
    """Cancel queued/running jobs of earlier generations of `study` (it was reopened)."""
    jobs = session.scalars(
        select(Job).where(
            Job.study_id == study.id,
            Job.generation < study.generation,
            Job.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]),
        )
    ).all()
    for job in jobs:
        _cancel(session, job, reason, study.study_uid)
    return [job.id for job in jobs]


def _requeue(
    session: Session,
    job: Job,
    *,
    reason: str,
    rule: str,
    count_attempt: bool,
    max_attempts: int,
    extra_where: Any = None,
) -> str | None:
    """Put a running job back in the queue (or fail it when out of attempts). Returns the new job state."""
    exhausted = count_attempt and job.attempts >= max_attempts
    new_state = JobState.FAILED if exhausted else JobState.QUEUED
    values: dict[str, Any] = {"state": new_state.value, "worker_id": None, "lease_expires_at": None}
    if exhausted:
        values.update(finished_at=utcnow(), error=f"{reason}; gave up after {job.attempts} attempt(s)")
    if not count_attempt:
        values["attempts"] = Job.attempts - 1
    statement = update(Job).where(
        Job.id == job.id, Job.state == JobState.RUNNING.value, Job.worker_id == job.worker_id
    )
    if extra_where is not None:
        statement = statement.where(extra_where)
    changed = session.execute(statement.values(**values).execution_options(synchronize_session=False))
    if cast("CursorResult[Any]", changed).rowcount != 1:
        return None
    if not exhausted:
        ring_on_commit(session, JOBS)
    study = _study_for(session, job)
    study_uid = study.study_uid if study is not None else None
    audit.record(
        session,
        "job",
        "failed" if exhausted else "requeued",
        outcome="failed" if exhausted else "ok",
        reason=values.get("error", reason),
        study_uid=study_uid,
        job_id=job.id,
        worker_id=job.worker_id,
        attempt=job.attempts,
        rule=rule,
    )
    if study is not None and study.state == StudyState.RUNNING.value:
        if exhausted:
            transition(session, study, StudyState.FAILED, reason=values["error"], rule=rule, job_id=job.id)
        else:
            transition(session, study, StudyState.QUEUED, reason=reason, rule=rule, job_id=job.id)
    log.warning(
        "job %s",
        "failed" if exhausted else "re-queued",
        extra={"job_id": job.id, "worker_id": job.worker_id, "reason": reason, "attempt": job.attempts},
    )
    return new_state.value


def requeue_expired_jobs(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """Put jobs whose worker's lease expired back in the queue (their worker is dead or cut off)."""
    now = utcnow()
    with transaction(sessions) as session:
        expired = session.scalars(
            select(Job).where(Job.state == JobState.RUNNING.value, Job.lease_expires_at < now)
        ).all()
        for job in expired:
            _requeue(
                session,
                job,
                reason=f"lease of worker {job.worker_id} expired (worker died or hung)",
                rule="lease-expired",
                count_attempt=True,
                max_attempts=settings.workers.max_attempts,
                extra_where=Job.lease_expires_at < now,
            )


def requeue_worker_jobs(
    settings: Settings, sessions: sessionmaker[Session], worker_id: str, *, died: bool
) -> int:
    """Jobs held by `worker_id` go back to the queue now, without waiting for the lease.

    died=True: its process exited mid-job (the attempt counts); False: it was stopped on purpose and released
    the job (the attempt does not count).
    """
    with transaction(sessions) as session:
        held = session.scalars(
            select(Job).where(Job.state == JobState.RUNNING.value, Job.worker_id == worker_id)
        ).all()
        reason = (
            f"worker {worker_id} died during the job" if died else f"worker {worker_id} stopped; job released"
        )
        moved = [
            _requeue(
                session,
                job,
                reason=reason,
                rule="worker-died" if died else "worker-stopped",
                count_attempt=died,
                max_attempts=settings.workers.max_attempts,
            )
            for job in held
        ]
    return sum(1 for state in moved if state is not None)
