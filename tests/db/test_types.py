"""Every timestamp column stores UTC and hands back an aware UTC datetime, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent
from db.session import transaction

PARIS_SUMMER = dt.timezone(dt.timedelta(hours=2))


def test_a_timestamp_written_in_another_zone_reads_back_as_the_same_instant_in_utc(
    sessions: sessionmaker[Session],
) -> None:
    written = dt.datetime(2026, 6, 1, 14, 30, tzinfo=PARIS_SUMMER)
    with transaction(sessions) as session:
        session.add(AuditEvent(category="test", action="written", outcome="ok", created_at=written))
    with sessions() as session:
        read = session.scalars(select(AuditEvent.created_at)).one()
        newest = session.scalar(select(func.max(AuditEvent.created_at)))
    assert read == newest == dt.datetime(2026, 6, 1, 12, 30, tzinfo=dt.timezone.utc)
    assert read.tzinfo is dt.timezone.utc and newest is not None and newest.tzinfo is dt.timezone.utc


def test_a_naive_timestamp_is_refused_with_the_value(sessions: sessionmaker[Session]) -> None:
    naive = dt.datetime(2026, 6, 1, 12, 30)
    with pytest.raises(StatementError, match="naive datetime 2026-06-01T12:30:00"):
        with transaction(sessions) as session:
            session.add(AuditEvent(category="test", action="naive", outcome="ok", created_at=naive))
