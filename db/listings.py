"""The study and delivery listings (`psma-node studies list` and `outbox list`, the studies page and API),
in SQLAlchemy Core.

Written on lightweight table clauses that name only the columns they read rather than on db.models:
importing the ORM and mapping the models takes ~0.1 s, which `studies list` cannot spare within its
0.5 s (bench/bench_cli.py). tests/db/test_queries.py keeps these columns equal to the models'.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Float, Integer, Row, String, column, func, select, table

from db.types import UTCDateTime

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

STUDIES = table(
    "studies",
    column("id", Integer),
    column("study_uid", String),
    column("accession_number", String),
    column("patient_id", String),
    column("patient_name", String),
    column("study_date", String),
    column("state", String),
    column("state_reason", String),
    column("instance_count", Integer),
    column("first_received_at", UTCDateTime()),
    column("last_received_at", UTCDateTime()),
    column("state_changed_at", UTCDateTime()),
    column("purged_at", UTCDateTime()),
)
RESULTS = table(
    "results",
    column("id", Integer),
    column("study_id", Integer),
    column("created_at", UTCDateTime()),
    column("finding", String),
    column("probability", Float),
    column("model_id", String),
    column("superseded_by_id", Integer),
)
OUTBOX = table(
    "outbox",
    column("id", Integer),
    column("study_uid", String),
    column("destination", String),
    column("sop_class_uid", String),
    column("sop_instance_uid", String),
    column("state", String),
    column("attempts", Integer),
    column("next_attempt_at", UTCDateTime()),
    column("last_error", String),
)


@dataclass
class StudyRow:
    """One line of the studies page: where a study is and what the current result says."""

    study_uid: str
    accession_number: str | None
    patient_id: str | None
    patient_name: str | None
    study_date: str | None
    state: str
    state_reason: str | None
    instance_count: int
    first_received_at: dt.datetime
    last_received_at: dt.datetime
    state_changed_at: dt.datetime
    purged_at: dt.datetime | None
    finding: str | None = None
    probability: float | None = None
    model_id: str | None = None


def list_studies(
    db: Connection | Session,
    *,
    state: str | None = None,
    search: str | None = None,
    limit: int = 200,
    offset: int = 0,
) -> list[StudyRow]:
    """Studies, most recently received first, optionally of one state or matching an accession/UID/ID,
    each with its current result (the newest one not superseded)."""
    s = STUDIES.c
    query = select(STUDIES).order_by(s.last_received_at.desc(), s.id.desc())
    if state:
        query = query.where(s.state == state)
    if search:
        pattern = f"%{search}%"
        query = query.where(
            s.accession_number.ilike(pattern) | s.study_uid.ilike(pattern) | s.patient_id.ilike(pattern)
        )
    studies = [row._asdict() for row in db.execute(query.limit(limit).offset(offset))]
    current: dict[int, tuple[str | None, float | None, str | None]] = {}
    if studies:
        r = RESULTS.c
        results = db.execute(
            select(r.study_id, r.finding, r.probability, r.model_id)
            .where(r.study_id.in_([study["id"] for study in studies]), r.superseded_by_id.is_(None))
            .order_by(r.created_at, r.id)
        )
        current = {study_id: (finding, p, model_id) for study_id, finding, p, model_id in results}
    rows = []
    for study in studies:
        finding, probability, model_id = current.get(study.pop("id"), (None, None, None))
        rows.append(StudyRow(**study, finding=finding, probability=probability, model_id=model_id))
    return rows


def list_outbox(
    db: Connection | Session, *, state: str | None = None, study_uid: str | None = None, limit: int = 100
) -> Sequence[Row[Any]]:
    """Outbox items, newest first, as plain rows with the columns of `OUTBOX` (attribute access)."""
    query = select(OUTBOX).order_by(OUTBOX.c.id.desc()).limit(limit)
    if state:
        query = query.where(OUTBOX.c.state == state)
    if study_uid:
        query = query.where(OUTBOX.c.study_uid == study_uid)
    return db.execute(query).all()


def outbox_counts(db: Connection | Session) -> dict[str, int]:
    """Outbox items per state (states without items are absent)."""
    rows = db.execute(select(OUTBOX.c.state, func.count()).group_by(OUTBOX.c.state))
    return {state: int(n) for state, n in rows}
