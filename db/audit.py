"""The append-only audit trail: every stage records what it did, to whom, and why."""

from __future__ import annotations

import getpass
import os
from typing import Any

from sqlalchemy.orm import Session

from db.models import AuditEvent


def record(
    session: Session,
    category: str,
    action: str,
    *,
    outcome: str = "ok",
    reason: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    actor: str | None = None,
    peer: str | None = None,
    **detail: Any,
) -> AuditEvent:
    """Add one event to the session; it is committed with the caller's transaction.

    Categories: association, instance, study, job, result, delivery, admin, system.
    """
    event = AuditEvent(
        category=category,
        action=action,
        outcome=outcome,
        reason=reason,
        study_uid=study_uid,
        series_uid=series_uid,
        sop_instance_uid=sop_instance_uid,
        actor=actor,
        peer=peer,
        detail=detail,
    )
    session.add(event)
    return event


def os_user() -> str:
    """The actor recorded for CLI commands that change state: the operating-system user running them."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"
