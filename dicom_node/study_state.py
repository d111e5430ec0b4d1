"""The study state machine: which transitions exist, and each one as an audited compare-and-set.

Every change of Study.state in the node goes through `transition`, so that the audit trail holds one
"study" event per change with the reason and the rule that fired, and so that two processes racing on the
same study (two assemblers, a worker finishing while new data reopens the study) cannot both win: the UPDATE
only applies when the row still is in the state, generation and instance count the caller decided on.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, cast

from sqlalchemy import CursorResult, Select, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from db import audit
from db.clock import utcnow
from db.models import Study, StudyState

log = logging.getLogger(__name__)

S = StudyState
ALLOWED: dict[StudyState, frozenset[StudyState]] = {
    S.RECEIVING: frozenset({S.COMPLETE, S.REJECTED}),
    S.COMPLETE: frozenset({S.QUEUED, S.RECEIVING}),
    S.QUEUED: frozenset({S.RUNNING, S.RECEIVING, S.FAILED}),
    S.RUNNING: frozenset({S.DONE, S.FAILED, S.QUEUED, S.RECEIVING}),
    S.DONE: frozenset({S.RECEIVING}),
    S.FAILED: frozenset({S.RECEIVING}),
    S.REJECTED: frozenset({S.RECEIVING}),
}
"""Reopening (new data, or an admin's reprocess) is the only way back to RECEIVING, and it bumps the
generation; RUNNING -> QUEUED is a job re-queued after its worker's lease expired."""

ACTION = {
    S.COMPLETE: "complete",
    S.QUEUED: "queued",
    S.RUNNING: "running",
    S.DONE: "done",
    S.FAILED: "failed",
    S.REJECTED: "rejected",
    S.RECEIVING: "reopened",
}

OUTCOME = {S.FAILED: "failed", S.REJECTED: "rejected"}


class IllegalTransition(Exception):
    """A stage asked for a transition the state machine does not have (a programming error)."""


SETTLED = [S.COMPLETE, S.QUEUED, S.RUNNING, S.DONE, S.FAILED, S.REJECTED]


def reopen_candidates() -> Select[Study]:
    """Studies decided on earlier content that have received instances since (new or revised)."""
    return select(Study).where(
        Study.state.in_([s.value for s in SETTLED]),
        or_(
            Study.instance_count != Study.assessed_instance_count,
            Study.assessed_received_at.is_(None),
            Study.last_received_at != Study.assessed_received_at,
        ),
    )


def transition(
    session: Session,
    study: Study,
    to: StudyState,
    *,
    reason: str,
    rule: str,
    actor: str | None = None,
    assessed: tuple[int, dt.datetime] | None = None,
    **detail: Any,
) -> bool:
    """Move `study` to `to` if it is still where the caller saw it; record the audit event; True if done.

    Reopening (to RECEIVING) increments the generation. `assessed` = (instance_count, last_received_at) the
    caller's decision was based on: the change then applies only if no instance arrived since, and these
    values are kept so that any later arrival is noticed (see `reopen_candidates`).
    """
    current = StudyState(study.state)
    if to not in ALLOWED[current]:
        raise IllegalTransition(f"study {study.study_uid}: {current.value} -> {to.value} is not a transition")
    now = utcnow()
    generation = study.generation + 1 if to is S.RECEIVING else study.generation
    values: dict[str, Any] = {
        "state": to.value,
        "state_reason": reason,
        "state_changed_at": now,
        "generation": generation,
    }
    if to is S.RECEIVING:
        values["completeness_proven_at"] = None
    if assessed is not None:
        values["assessed_instance_count"], values["assessed_received_at"] = assessed
    statement = (
        update(Study)
        .where(Study.id == study.id, Study.state == current.value, Study.generation == study.generation)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if assessed is not None:
        statement = statement.where(
            Study.instance_count == assessed[0], Study.last_received_at == assessed[1]
        )
    if cast("CursorResult[Any]", session.execute(statement)).rowcount != 1:
        log.info(
            "study transition lost a race",
            extra={"study_uid": study.study_uid, "from_state": current.value, "to_state": to.value},
        )
        return False
    for key, value in values.items():
        set_committed_value(study, key, value)
    audit.record(
        session,
        "study",
        ACTION[to],
        outcome=OUTCOME.get(to, "ok"),
        reason=reason,
        study_uid=study.study_uid,
        actor=actor,
        rule=rule,
        from_state=current.value,
        to_state=to.value,
        generation=generation,
        **detail,
    )
    log.info(
        "study %s",
        ACTION[to],
        extra={
            "study_uid": study.study_uid,
            "from_state": current.value,
            "to_state": to.value,
            "rule": rule,
            "reason": reason,
            "generation": generation,
        },
    )
    return True
