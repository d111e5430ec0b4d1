"""Read-side queries the dashboard, API and CLIs share: the same numbers everywhere."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import TableClause, select
from sqlalchemy.orm import Session, sessionmaker

from db import listings, queries
from db.audit import record
from db.models import Base, Job, Result, Study
from db.session import transaction
from tests.db.seed import SeededStudy, seed_study, seed_worker


@pytest.fixture
def seeded(sessions: sessionmaker[Session], tmp_path: Path) -> tuple[sessionmaker[Session], SeededStudy]:
    """A delivered study, a failed delivery, a rejected study, failed and queued jobs, a stale worker."""
    factory = sessions
    dirs = {"storage": tmp_path / "s", "results": tmp_path / "r"}
    with transaction(factory) as session:
        done = seed_study(session, accession="A-DONE", delivered_at=dt.datetime.now(dt.timezone.utc), **dirs)
        seed_study(session, accession="A-OUTBOX", outbox_state="failed", **dirs)
        seed_study(session, accession="A-REJ", state="rejected", reason="tracer FDG not accepted", **dirs)
        record(session, "association", "refused", outcome="refused", reason="calling AE not allowed: EVIL")
        session.flush()
        job = session.query(Job).first()
        session.add(
            Job(
                study_id=job.study_id,
                generation=2,
                state="failed",
                error="CUDA out of memory",
                finished_at=dt.datetime.now(dt.timezone.utc),
            )
        )
        session.add(Job(study_id=job.study_id, generation=3, state="queued"))
        seed_worker(session, worker_id="w-old", age_seconds=600)
    return factory, done


def test_failures_gather_every_kind_with_its_reason(seeded) -> None:
    factory, _ = seeded
    with factory() as session:
        found = {(f.kind, f.reason) for f in queries.failures(session)}
    assert ("study rejected", "tracer FDG not accepted") in found
    assert ("job failed", "CUDA out of memory") in found
    assert ("delivery failed", "association rejected: called AE not recognised") in found
    assert ("association refused", "calling AE not allowed: EVIL") in found


def test_timeline_by_accession_or_uid(seeded) -> None:
    factory, done = seeded
    with factory() as session:
        by_accession = queries.study_timeline(session, "A-DONE")
        by_uid = queries.study_timeline(session, done.study_uid)
        assert queries.study_timeline(session, "nope") is None
    assert by_accession is not None and by_uid is not None
    assert by_accession.study.study_uid == by_uid.study.study_uid == done.study_uid
    assert by_accession.study.probability == 0.83 and len(by_accession.jobs) == 3


def test_health_counts_queue_and_stale_workers(seeded) -> None:
    factory, _ = seeded
    with factory() as session:
        health = queries.health(session, worker_stale_after=dt.timedelta(seconds=60))
    assert health.queue_depth == 1
    assert health.studies_by_state["done"] == 2 and health.studies_by_state["rejected"] == 1
    assert health.outbox_by_state == {"delivered": 2, "failed": 2}
    assert [(w.id, w.alive) for w in health.workers] == [("w-old", False)]
    assert health.last_association_at is not None and health.last_instance_at is not None


def test_audit_events_stream_in_batches_in_order(seeded) -> None:
    factory, _ = seeded
    with factory() as session:
        every = [e.id for e in queries.audit_events(session, batch=3)]
        assert every == sorted(every) and len(every) == len(set(every)) > 6
        since = dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=1)
        assert list(queries.audit_events(session, since=since)) == []
        refused = list(queries.audit_events(session, category="association", batch=1))
        assert {e.action for e in refused} == {"accepted", "refused"}


@pytest.mark.parametrize("clause", [listings.STUDIES, listings.RESULTS, listings.OUTBOX], ids=str)
def test_listing_columns_are_the_models_columns(clause: TableClause) -> None:
    table = Base.metadata.tables[clause.name]
    for column in clause.columns:
        assert column.name in table.c, f"{clause.name}.{column.name} is not a column of the model"
        assert column.type.python_type is table.c[column.name].type.python_type, column.name


def test_study_list_shows_each_study_with_its_current_result(seeded) -> None:
    factory, done = seeded
    with transaction(factory) as session:
        old = session.scalars(select(Result).join(Study).where(Study.study_uid == done.study_uid)).one()
        newer = Result(study_id=old.study_id, job_id=old.job_id, model_id="E", software_version="0.1.0",
                       probability=0.25, finding="absent")
        session.add(newer)
        session.flush()
        old.superseded_by_id = newer.id
    with factory() as session:  # the dashboard reads through a session, the CLI through a connection
        rows = {row.accession_number: row for row in listings.list_studies(session)}
    with factory.kw["bind"].connect() as connection:
        rejected = listings.list_studies(connection, state="rejected")
        searched = listings.list_studies(connection, search="a-rej")
        second = listings.list_studies(connection, limit=1, offset=1)
    current = rows["A-DONE"]
    assert (current.finding, current.probability, current.model_id) == ("absent", 0.25, "E")
    assert current.last_received_at.tzinfo == dt.timezone.utc
    assert rows["A-REJ"].finding is None and rows["A-REJ"].state_reason == "tracer FDG not accepted"
    assert [r.accession_number for r in rejected] == [r.accession_number for r in searched] == ["A-REJ"]
    assert [r.accession_number for r in second] == ["A-OUTBOX"]  # newest first: A-REJ, A-OUTBOX, A-DONE


def test_outbox_listing_newest_first_with_totals(seeded) -> None:
    factory, _ = seeded
    with factory.kw["bind"].connect() as connection:
        failed = listings.list_outbox(connection, state="failed")
        newest = listings.list_outbox(connection, limit=3)
        counts = listings.outbox_counts(connection)
    assert counts == {"delivered": 2, "failed": 2}
    assert [row.last_error for row in failed] == ["association rejected: called AE not recognised"] * 2
    assert len(newest) == 3 and [row.id for row in newest] == sorted((row.id for row in newest), reverse=True)
    assert newest[0].next_attempt_at.tzinfo == dt.timezone.utc
