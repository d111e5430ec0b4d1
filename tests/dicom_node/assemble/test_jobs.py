"""The job queue under concurrency on SQLite and PostgreSQL: one winner per job, leases, re-queueing."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Job, JobState, Study
from db.session import transaction
from dicom_node.assemble import Assembler
from dicom_node.config import Settings
from dicom_node.jobs import (
    ClaimedJob,
    claim_next_job,
    finish_job,
    renew_lease,
    requeue_expired_jobs,
    requeue_worker_jobs,
)
from tests.dicom_node.assemble.rows import add_ct, add_pet, add_study

SETTINGS = Settings.model_validate({"assembly": {"settle_seconds": 0}, "workers": {"max_attempts": 2}})


def _queue_studies(sessions: sessionmaker[Session], count: int) -> list[int]:
    ids = []
    for n in range(count):
        study_id, _ = add_study(sessions, accession=f"A{n}")
        add_pet(sessions, study_id, slices=5, z0=-8.0)
        add_ct(sessions, study_id, slices=12, z0=-10.0)
        ids.append(study_id)
    Assembler().tick(SETTINGS, sessions)
    return ids


def _state(sessions: sessionmaker[Session], study_id: int) -> tuple[str, list[Job]]:
    with sessions() as session:
        study = session.get(Study, study_id)
        assert study is not None
        jobs = list(session.scalars(select(Job).where(Job.study_id == study_id)))
        return study.state, jobs


def test_concurrent_claimers_never_share_a_job(sessions: sessionmaker[Session]) -> None:
    _queue_studies(sessions, 12)
    claimed: dict[str, list[ClaimedJob]] = {f"w{n}": [] for n in range(4)}
    start = threading.Barrier(4)

    def claimer(worker_id: str) -> None:
        start.wait()
        while (job := claim_next_job(sessions, worker_id, 30)) is not None:
            claimed[worker_id].append(job)

    threads = [threading.Thread(target=claimer, args=(w,)) for w in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ids = [job.id for jobs in claimed.values() for job in jobs]
    assert len(ids) == 12 and len(set(ids)) == 12
    with sessions() as session:
        rows = session.scalars(select(Job)).all()
        assert all(j.state == "running" and j.attempts == 1 for j in rows)
        assert {j.worker_id for j in rows} <= set(claimed)
        studies = session.scalars(select(Study)).all()
        assert all(s.state == "running" for s in studies)


def test_two_claimers_one_job_one_winner(sessions: sessionmaker[Session]) -> None:
    _queue_studies(sessions, 1)
    results: list[ClaimedJob | None] = []
    start = threading.Barrier(2)

    def claimer(worker_id: str) -> None:
        start.wait()
        results.append(claim_next_job(sessions, worker_id, 30))

    threads = [threading.Thread(target=claimer, args=(w,)) for w in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(r is None for r in results) == [False, True]


def test_expired_lease_requeues_then_fails_after_max_attempts(sessions: sessionmaker[Session]) -> None:
    (study_id,) = _queue_studies(sessions, 1)
    for attempt in (1, 2):
        job = claim_next_job(sessions, f"dead-{attempt}", 0.01)
        assert job is not None and job.attempts == attempt
        with transaction(sessions) as session:
            session.execute(
                update(Job).values(
                    lease_expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)
                )
            )
        requeue_expired_jobs(SETTINGS, sessions)
        assert not renew_lease(sessions, job.id, f"dead-{attempt}", 30)
    state, jobs = _state(sessions, study_id)
    assert state == "failed" and jobs[0].state == JobState.FAILED.value
    assert "gave up after 2 attempt(s)" in (jobs[0].error or "")
    with sessions() as session:
        actions = [
            e.action
            for e in session.scalars(
                select(AuditEvent).where(AuditEvent.category == "job").order_by(AuditEvent.id)
            )
        ]
    # Queued while no worker had registered: the job's "waiting" note says so.
    assert actions == ["queued", "waiting", "claimed", "requeued", "claimed", "failed"]


def test_live_lease_is_not_requeued(sessions: sessionmaker[Session]) -> None:
    (study_id,) = _queue_studies(sessions, 1)
    job = claim_next_job(sessions, "alive", 30)
    assert job is not None and renew_lease(sessions, job.id, "alive", 30)
    requeue_expired_jobs(SETTINGS, sessions)
    assert _state(sessions, study_id)[0] == "running"


def test_released_job_does_not_count_an_attempt(sessions: sessionmaker[Session]) -> None:
    (study_id,) = _queue_studies(sessions, 1)
    job = claim_next_job(sessions, "stopping", 30)
    assert job is not None
    assert requeue_worker_jobs(SETTINGS, sessions, "stopping", died=False) == 1
    state, jobs = _state(sessions, study_id)
    assert state == "queued" and jobs[0].attempts == 0 and jobs[0].worker_id is None
    again = claim_next_job(sessions, "next", 30)
    assert again is not None and again.id == job.id and again.attempts == 1


def test_finishing_a_job_taken_away_reports_it(sessions: sessionmaker[Session]) -> None:
    _queue_studies(sessions, 1)
    job = claim_next_job(sessions, "slow", 30)
    assert job is not None
    requeue_worker_jobs(SETTINGS, sessions, "slow", died=True)
    with transaction(sessions) as session:
        assert not finish_job(session, job.id, "slow", JobState.DONE)
