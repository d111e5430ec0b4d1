"""The durable outbox: one row per object and destination, and the only ways its state may change.

pending → sending → delivered (→ confirmed) | failed(reason). A row is claimed pending→sending with a
conditional UPDATE, so two senders can never both send it; while it is "sending", `next_attempt_at` is the
claim's lease: a sender that dies mid-send leaves a row that is put back to pending when the lease runs
out and sent again. The PACS then sees the same SOP Instance UID twice, which it treats as a duplicate:
delivery is at-least-once with idempotent UIDs, and an acknowledged object is never sent again because
its row is marked delivered in the transaction right after the acknowledgement.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any, cast

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from db import audit
from db.clock import utcnow
from db.models import OutboxItem, OutboxState
from dicom_node.config import RetrySettings, Settings
from dicom_node.wake import OUTBOX, ring_on_commit

SENDER_PREFIX = "sender:"


def retry_delay(attempts: int, retry: RetrySettings, rng: random.Random | None = None) -> float:
    """Seconds before the next attempt after `attempts` failures: doubling from initial, capped, jittered."""
    base = retry.initial_seconds * (2.0 ** max(0, attempts - 1))
    jitter = (rng or random).random() * retry.jitter
    return min(retry.max_seconds, base) * (1.0 + jitter)


def sender_destination(settings: Settings, calling_ae: str | None) -> str | None:
    """The outbox destination name for 'return to sender', if the sender's port is configured."""
    if not calling_ae:
        return None
    for peer in settings.node.allowed_calling_aes:
        if peer.ae_title == calling_ae and peer.port:
            return f"{SENDER_PREFIX}{calling_ae}"
    return None


def enqueue(session: Session, *, result_id: int | None, study_uid: str, destination: str, path: Path,
            sop_class_uid: str, sop_instance_uid: str, now: dt.datetime | None = None) -> OutboxItem:
    """A new pending row for a file that already exists on disk (checked: the row must never dangle)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"outbox object {path} does not exist")
    now = now or utcnow()
    item = OutboxItem(
        result_id=result_id, study_uid=study_uid, destination=destination, path=str(path),
        sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid, state=OutboxState.PENDING.value,
        attempts=0, next_attempt_at=now, created_at=now, retry_window_start=now,
    )
    session.add(item)
    ring_on_commit(session, OUTBOX)  # the sender starts when this commits, not at its next tick
    return item


def due_destinations(session: Session, now: dt.datetime) -> list[str]:
    """Destinations with at least one pending row whose time has come."""
    rows = session.execute(
        select(OutboxItem.destination)
        .where(OutboxItem.state == OutboxState.PENDING.value, OutboxItem.next_attempt_at <= now)
        .group_by(OutboxItem.destination)
    ).scalars()
    return list(rows)


def claim(session: Session, destination: str, now: dt.datetime, lease_seconds: float, limit: int) -> list[int]:
    """Atomically move due pending rows of one destination to sending; returns the ids this caller won."""
    candidates = session.execute(
        select(OutboxItem.id)
        .where(OutboxItem.destination == destination, OutboxItem.state == OutboxState.PENDING.value,
               OutboxItem.next_attempt_at <= now)
        .order_by(OutboxItem.next_attempt_at, OutboxItem.id)
        .limit(limit)
    ).scalars().all()
    lease = now + dt.timedelta(seconds=lease_seconds)
    won: list[int] = []
    for item_id in candidates:
        changed = cast("CursorResult[Any]", session.execute(
            update(OutboxItem)
            .where(OutboxItem.id == item_id, OutboxItem.state == OutboxState.PENDING.value)
            .values(state=OutboxState.SENDING.value, next_attempt_at=lease, attempts=OutboxItem.attempts + 1)
            .execution_options(synchronize_session=False)
        )).rowcount
        if changed == 1:
            won.append(item_id)
    return won


def recover_interrupted(session: Session, now: dt.datetime) -> int:
    """Rows left 'sending' past their lease (a sender died mid-send) go back to pending, audited."""
    stale = session.execute(
        select(OutboxItem).where(OutboxItem.state == OutboxState.SENDING.value, OutboxItem.next_attempt_at < now)
    ).scalars().all()
    for item in stale:
        item.state = OutboxState.PENDING.value
        item.next_attempt_at = now
        audit.record(session, "delivery", "interrupted-attempt", outcome="warning",
                     reason="sender stopped during the attempt; sending again (the peer may see a duplicate "
                            "of the same SOP Instance UID, which it treats as identical)",
                     study_uid=item.study_uid, sop_instance_uid=item.sop_instance_uid, peer=item.destination,
                     outbox_id=item.id, attempt=item.attempts)
    return len(stale)


def mark_delivered(session: Session, item_id: int, *, sent_as: str, peer: str, status: str,
                   now: dt.datetime | None = None) -> OutboxItem:
    """The peer acknowledged the object: it is never sent again."""
    item = session.get(OutboxItem, item_id)
    assert item is not None
    now = now or utcnow()
    item.state = OutboxState.DELIVERED.value
    item.delivered_at = now
    item.sent_as_sop_class_uid = sent_as
    item.last_error = None
    audit.record(session, "delivery", "stored", study_uid=item.study_uid, sop_instance_uid=item.sop_instance_uid,
                 peer=peer, destination=item.destination, attempt=item.attempts, status=status,
                 outbox_id=item.id, sent_as_sop_class_uid=sent_as)
    return item


def mark_confirmed(session: Session, item_id: int, *, peer: str, found: bool, detail: str,
                   now: dt.datetime | None = None) -> OutboxItem:
    """Result of asking the peer whether it can find the object it acknowledged."""
    item = session.get(OutboxItem, item_id)
    assert item is not None
    if found:
        item.state = OutboxState.CONFIRMED.value
        item.confirmed_at = now or utcnow()
    audit.record(session, "delivery", "confirmed" if found else "confirm-failed",
                 outcome="ok" if found else "warning", reason=None if found else detail,
                 study_uid=item.study_uid, sop_instance_uid=item.sop_instance_uid, peer=peer,
                 destination=item.destination, outbox_id=item.id, method=detail if found else None)
    return item


def mark_failed_attempt(session: Session, item_id: int, *, reason: str, peer: str, status: str,
                        retry: RetrySettings, now: dt.datetime | None = None,
                        rng: random.Random | None = None) -> OutboxItem:
    """Back off and retry later, or give up (FAILED with the reason) once the retry window is over."""
    item = session.get(OutboxItem, item_id)
    assert item is not None
    now = now or utcnow()
    started = item.retry_window_start or item.created_at
    age = (now - started).total_seconds()
    item.last_error = reason
    detail: dict[str, Any] = dict(study_uid=item.study_uid, sop_instance_uid=item.sop_instance_uid, peer=peer,
                  destination=item.destination, attempt=item.attempts, status=status, outbox_id=item.id)
    if age >= retry.give_up_after_seconds:
        item.state = OutboxState.FAILED.value
        item.last_error = (f"gave up after {item.attempts} attempts over {age:.0f} s "
                           f"(retry window {retry.give_up_after_seconds:g} s); last error: {reason}")
        audit.record(session, "delivery", "attempt", outcome="error", reason=reason, **detail)
        audit.record(session, "delivery", "gave-up", outcome="error", reason=item.last_error, **detail)
        return item
    delay = retry_delay(item.attempts, retry, rng)
    item.state = OutboxState.PENDING.value
    item.next_attempt_at = now + dt.timedelta(seconds=delay)
    audit.record(session, "delivery", "attempt", outcome="error", reason=reason,
                 next_attempt_in_s=round(delay, 1), **detail)
    return item


def hold_destination(session: Session, destination: str, until: dt.datetime) -> int:
    """Per-destination back-off: pending rows of a failing destination wait at least until `until`."""
    return cast("CursorResult[Any]", session.execute(
        update(OutboxItem)
        .where(OutboxItem.destination == destination, OutboxItem.state == OutboxState.PENDING.value,
               OutboxItem.next_attempt_at < until)
        .values(next_attempt_at=until)
        .execution_options(synchronize_session=False)
    )).rowcount


def retry(session: Session, item_ids: list[int] | None, actor: str, now: dt.datetime | None = None) -> list[int]:
    """Manual retry: FAILED rows (or the given pending/failed ids) are due now with a fresh retry window."""
    now = now or utcnow()
    query = select(OutboxItem)
    if item_ids:
        query = query.where(OutboxItem.id.in_(item_ids),
                            OutboxItem.state.in_([OutboxState.FAILED.value, OutboxState.PENDING.value]))
    else:
        query = query.where(OutboxItem.state == OutboxState.FAILED.value)
    changed: list[int] = []
    for item in session.execute(query).scalars():
        previous = item.state
        item.state = OutboxState.PENDING.value
        item.next_attempt_at = now
        item.retry_window_start = now
        changed.append(item.id)
        audit.record(session, "delivery", "manual-retry", study_uid=item.study_uid,
                     sop_instance_uid=item.sop_instance_uid, actor=actor, destination=item.destination,
                     outbox_id=item.id, previous_state=previous, previous_error=item.last_error)
    if changed:
        ring_on_commit(session, OUTBOX)
    return changed
