"""The database itself refuses to change or remove audit events (triggers created by the migration)."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from db.audit import record
from db.models import AuditEvent
from db.session import transaction


@pytest.fixture(autouse=True)
def one_login(sessions: sessionmaker[Session]) -> None:
    """Every test starts with one audit event already written."""
    with transaction(sessions) as session:
        record(session, "admin", "login", actor="alice", peer="10.0.0.1")


def _trail(sessions) -> list[tuple[str, str | None]]:
    with sessions() as session:
        return [(e.action, e.actor) for e in session.scalars(select(AuditEvent))]


@pytest.mark.parametrize(
    "statement",
    [
        update(AuditEvent).values(actor="mallory"),
        delete(AuditEvent),
    ],
    ids=["update", "delete"],
)
def test_audit_rows_cannot_be_changed_or_deleted(sessions, statement) -> None:
    with pytest.raises(DBAPIError, match="append-only"):
        with transaction(sessions) as session:
            session.execute(statement)
    assert _trail(sessions) == [("login", "alice")]


def test_orm_edit_of_an_audit_event_is_refused(sessions) -> None:
    with pytest.raises(DBAPIError, match="append-only: UPDATE refused"):
        with transaction(sessions) as session:
            event = session.scalars(select(AuditEvent)).one()
            event.reason = "rewritten history"
    assert _trail(sessions) == [("login", "alice")]


def test_postgres_also_refuses_truncate(sessions, db_url: str) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("TRUNCATE exists only on PostgreSQL")
    with pytest.raises(DBAPIError, match="append-only: TRUNCATE refused"):
        with transaction(sessions) as session:
            session.execute(text("TRUNCATE audit_events"))
    assert _trail(sessions) == [("login", "alice")]


def test_appending_still_works(sessions) -> None:
    with transaction(sessions) as session:
        record(session, "admin", "logout", actor="alice")
    assert _trail(sessions) == [("login", "alice"), ("logout", "alice")]
