"""Dashboard login sessions kept in the database, so that logging out ends a session for good.

The signed cookie alone cannot be revoked: a copy taken before logout would keep working until it
expires. The cookie therefore also carries a random session id whose SHA-256 is a row here; logout deletes
the row, and a cookie whose row is gone opens nothing. The table holds only digests, so reading it does
not let anyone log in.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from db.clock import utcnow
from db.models import DashboardSession
from db.session import transaction


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class LoginSessions:
    """Opens, checks and ends login sessions in the `dashboard_sessions` table."""

    def __init__(self, sessions: sessionmaker[Session], hours: float) -> None:
        self._sessions = sessions
        self._lifetime = dt.timedelta(hours=hours)

    def open(self, user: str, peer: str | None) -> str:
        """A new session for `user`; returns the id to put into the cookie. Expired rows are removed."""
        session_id = secrets.token_urlsafe(32)
        now = utcnow()
        with transaction(self._sessions) as db:
            db.execute(delete(DashboardSession).where(DashboardSession.expires_at < now))
            db.add(DashboardSession(id=_digest(session_id), user_name=user, peer=peer,
                                    created_at=now, expires_at=now + self._lifetime))
        return session_id

    def is_open(self, session_id: str, user: str) -> bool:
        with self._sessions() as db:
            row = db.scalar(select(DashboardSession).where(DashboardSession.id == _digest(session_id)))
        if row is None or row.user_name != user:
            return False
        return row.expires_at > utcnow()

    def end(self, session_id: str) -> None:
        with transaction(self._sessions) as db:
            db.execute(delete(DashboardSession).where(DashboardSession.id == _digest(session_id)))
