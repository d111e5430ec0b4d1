"""Read-side queries for the admin surfaces (dashboard, JSON API, metrics, CLIs).

Kept in one place so that the dashboard, the API and the command line show the same numbers, and so that
no admin surface reaches into the tables in its own way. Nothing here writes. The study and delivery
listings the quick commands share with the dashboard are in db.listings, which stays clear of the ORM.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, Row, func, select
from sqlalchemy.orm import Session

from db.clock import utcnow
from db.listings import StudyRow
from db.models import (
    AuditEvent,
    Instance,
    Job,
    JobState,
    OutboxItem,
    OutboxState,
    Result,
    Study,
    StudyState,
    WorkerHeartbeat,
)

FAILED_OUTCOMES = ("refused", "rejected", "failed", "error")
SECONDARY_CAPTURE_CLASSES = (  # literal UIDs: db/ stays free of pydicom, which the quick CLI commands avoid
    "1.2.840.10008.5.1.4.1.1.7",
    "1.2.840.10008.5.1.4.1.1.7.1",
    "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3",
    "1.2.840.10008.5.1.4.1.1.7.4",
)


@dataclass
class ReceivedSeries:
    """One series of a study as the node received it, for the study timeline."""

    series_uid: str
    modality: str | None
    instances: int
    bytes: int
    first_received_at: dt.datetime
    last_received_at: dt.datetime
    analysable: bool


@dataclass
class StudyTimeline:
    """Everything an admin needs to answer "what happened to this study"."""

    study: StudyRow
    calling_ae: str | None
    pet_series_uid: str | None
    ct_series_uid: str | None
    generation: int
    events: list[AuditEvent]
    series: list[ReceivedSeries]
    jobs: list[Job]
    results: list[Result]
    outbox: list[OutboxItem]


@dataclass
class Failure:
    """Something that went wrong, with its reason, wherever it was recorded."""

    kind: str
    at: dt.datetime
    reason: str | None
    study_uid: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class WorkerRow:
    id: str
    host: str
    pid: int
    device: str | None
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    current_job_id: int | None
    alive: bool


@dataclass
class Health:
    """Node health as the database sees it (disk and storage checks are the caller's, it owns the paths)."""

    studies_by_state: dict[str, int]
    jobs_by_state: dict[str, int]
    outbox_by_state: dict[str, int]
    queue_depth: int
    last_association_at: dt.datetime | None
    last_instance_at: dt.datetime | None
    workers: list[WorkerRow]


def _study_row(study: Study, result: Result | None) -> StudyRow:
    return StudyRow(
        study_uid=study.study_uid,
        accession_number=study.accession_number,
        patient_id=study.patient_id,
        patient_name=study.patient_name,
        study_date=study.study_date,
        state=study.state,
        state_reason=study.state_reason,
        instance_count=study.instance_count,
        first_received_at=study.first_received_at,
        last_received_at=study.last_received_at,
        state_changed_at=study.state_changed_at,
        purged_at=study.purged_at,
        finding=result.finding if result else None,
        probability=result.probability if result else None,
        model_id=result.model_id if result else None,
    )


def count_by(session: Session, column: Any) -> dict[str, int]:
    """Row counts grouped by one column (e.g. Study.state)."""
    return {str(key): int(n) for key, n in session.execute(select(column, func.count()).group_by(column))}


def studies_by_state(session: Session) -> dict[str, int]:
    counts = {state.value: 0 for state in StudyState}
    counts.update(count_by(session, Study.state))
    return counts


def find_study(session: Session, key: str) -> Study | None:
    """A study by Study Instance UID or accession number (the newest if an accession repeats)."""
    study = session.scalar(select(Study).where(Study.study_uid == key))
    if study is None:
        study = session.scalar(
            select(Study)
            .where(Study.accession_number == key)
            .order_by(Study.last_received_at.desc())
            .limit(1)
        )
    return study


def series_summaries(session: Session, study_id: int) -> list[ReceivedSeries]:
    rows = session.execute(
        select(
            Instance.series_uid,
            func.max(Instance.modality),
            func.count(),
            func.coalesce(func.sum(Instance.size_bytes), 0),
            func.min(Instance.received_at),
            func.max(Instance.received_at),
            func.max(Instance.analysable.cast(Integer)),
        )
        .where(Instance.study_id == study_id, Instance.current.is_(True))
        .group_by(Instance.series_uid)
        .order_by(func.min(Instance.received_at))
    )
    return [
        ReceivedSeries(
            series_uid=uid,
            modality=modality,
            instances=int(n),
            bytes=int(size),
            first_received_at=first,
            last_received_at=last,
            analysable=bool(analysable),
        )
        for uid, modality, n, size, first, last, analysable in rows
    ]


def study_timeline(session: Session, key: str) -> StudyTimeline | None:
    """The full story of one study (by UID or accession), or None if the node never saw it."""
    study = find_study(session, key)
    if study is None:
        return None
    results = list(
        session.scalars(
            select(Result).where(Result.study_id == study.id).order_by(Result.created_at, Result.id)
        )
    )
    current = next((r for r in reversed(results) if r.superseded_by_id is None), None)
    return StudyTimeline(
        study=_study_row(study, current),
        calling_ae=study.calling_ae,
        pet_series_uid=study.pet_series_uid,
        ct_series_uid=study.ct_series_uid,
        generation=study.generation,
        events=list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.study_uid == study.study_uid)
                .order_by(AuditEvent.created_at, AuditEvent.id)
            )
        ),
        series=series_summaries(session, study.id),
        jobs=list(
            session.scalars(select(Job).where(Job.study_id == study.id).order_by(Job.created_at, Job.id))
        ),
        results=results,
        outbox=list(
            session.scalars(
                select(OutboxItem)
                .where(OutboxItem.study_uid == study.study_uid)
                .order_by(OutboxItem.created_at, OutboxItem.id)
            )
        ),
    )


def failures(session: Session, *, limit: int = 200) -> list[Failure]:
    """Failed or rejected studies, failed jobs, failed deliveries and refused inputs, newest first."""
    found: list[Failure] = []
    for study in session.scalars(
        select(Study)
        .where(Study.state.in_([StudyState.FAILED.value, StudyState.REJECTED.value]))
        .order_by(Study.state_changed_at.desc())
        .limit(limit)
    ):
        found.append(
            Failure(
                f"study {study.state}",
                study.state_changed_at,
                study.state_reason,
                study.study_uid,
                {"accession_number": study.accession_number},
            )
        )
    for job, study_uid in session.execute(
        select(Job, Study.study_uid)
        .join(Study, Study.id == Job.study_id)
        .where(Job.state == JobState.FAILED.value)
        .order_by(Job.finished_at.desc())
        .limit(limit)
    ):
        found.append(
            Failure(
                "job failed",
                job.finished_at or job.created_at,
                job.error,
                study_uid,
                {"job_id": job.id, "attempts": job.attempts},
            )
        )
    for item in session.scalars(
        select(OutboxItem)
        .where(OutboxItem.state == OutboxState.FAILED.value)
        .order_by(OutboxItem.created_at.desc())
        .limit(limit)
    ):
        found.append(
            Failure(
                "delivery failed",
                item.created_at,
                item.last_error,
                item.study_uid,
                {"destination": item.destination, "attempts": item.attempts, "outbox_id": item.id},
            )
        )
    for event in session.scalars(
        select(AuditEvent)
        .where(AuditEvent.outcome.in_(FAILED_OUTCOMES))
        .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
        .limit(limit)
    ):
        found.append(
            Failure(
                f"{event.category} {event.action}",
                event.created_at,
                event.reason,
                event.study_uid,
                {"outcome": event.outcome, "peer": event.peer},
            )
        )
    found.sort(key=lambda f: f.at, reverse=True)
    return found[:limit]


def outbox_items(session: Session, *, state: str | None = None, limit: int = 200) -> list[OutboxItem]:
    """Deliveries, pending and failed ones first, then the newest."""
    query = select(OutboxItem).order_by(OutboxItem.created_at.desc(), OutboxItem.id.desc()).limit(limit)
    if state:
        query = query.where(OutboxItem.state == state)
    return list(session.scalars(query))


def workers(
    session: Session, *, stale_after: dt.timedelta, now: dt.datetime | None = None
) -> list[WorkerRow]:
    """Registered worker processes; a worker is alive if it beat within `stale_after`."""
    now = now or utcnow()
    rows = []
    for w in session.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.id)):
        beat = w.heartbeat_at
        rows.append(
            WorkerRow(
                w.id,
                w.host,
                w.pid,
                w.device,
                w.started_at,
                beat,
                w.current_job_id,
                beat is not None and now - beat <= stale_after,
            )
        )
    return rows


def health(session: Session, *, worker_stale_after: dt.timedelta) -> Health:
    jobs = count_by(session, Job.state)
    return Health(
        studies_by_state=studies_by_state(session),
        jobs_by_state=jobs,
        outbox_by_state=count_by(session, OutboxItem.state),
        queue_depth=jobs.get(JobState.QUEUED.value, 0),
        last_association_at=session.scalar(
            select(func.max(AuditEvent.created_at)).where(AuditEvent.category == "association")
        ),
        last_instance_at=session.scalar(select(func.max(Instance.received_at))),
        workers=workers(session, stale_after=worker_stale_after),
    )


def _audit_filter(query: Any, since: dt.datetime | None, until: dt.datetime | None,
                  category: str | None) -> Any:
    table = AuditEvent.__table__
    if since is not None:
        query = query.where(table.c.created_at >= since)
    if until is not None:
        query = query.where(table.c.created_at < until)
    if category:
        query = query.where(table.c.category == category)
    return query


def count_audit_events(session: Session, *, since: dt.datetime | None = None,
                       until: dt.datetime | None = None, category: str | None = None) -> int:
    """How many events an export with the same filters will write (for its progress bar)."""
    query = _audit_filter(select(func.count()).select_from(AuditEvent.__table__), since, until, category)
    return int(session.execute(query).scalar_one())


def audit_events(
    session: Session,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    category: str | None = None,
    batch: int = 2000,
) -> Iterator[Row[Any]]:
    """Audit events in order as plain rows (attribute access like the model), streamed in keyset batches
    so that an export never holds the whole trail and never pays for ORM objects it does not need."""
    table = AuditEvent.__table__
    last_id = 0
    while True:
        query = select(table).where(table.c.id > last_id).order_by(table.c.id).limit(batch)
        query = _audit_filter(query, since, until, category)
        rows = session.execute(query).all()
        if not rows:
            return
        yield from rows
        last_id = rows[-1].id


def secondary_captures(session: Session, result_id: int) -> list[OutboxItem]:
    """Secondary Capture objects written for one result, one per SOP instance (whatever the destinations)."""
    seen: dict[str, OutboxItem] = {}
    for item in session.scalars(
        select(OutboxItem)
        .where(OutboxItem.result_id == result_id, OutboxItem.sop_class_uid.in_(SECONDARY_CAPTURE_CLASSES))
        .order_by(OutboxItem.id)
    ):
        seen.setdefault(item.sop_instance_uid, item)
    return list(seen.values())
