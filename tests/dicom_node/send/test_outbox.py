"""Outbox state transitions: back-off, atomic claims, interrupted attempts, giving up, manual retry."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

import pytest
from sqlalchemy import select

from db.clock import utcnow
from db.models import AuditEvent, OutboxItem
from db.session import transaction
from dicom_node import outbox
from dicom_node.config import RetrySettings
from tests.dicom_node.report.synthetic import make_sessions


def _item(session, tmp_path: Path, destination: str = "pacs", n: int = 0) -> OutboxItem:
    path = tmp_path / f"object{n}.dcm"
    path.write_bytes(b"x")
    item = outbox.enqueue(session, result_id=None, study_uid="1.2.3", destination=destination, path=path,
                          sop_class_uid="1.2.840.10008.5.1.4.1.1.7", sop_instance_uid=f"1.2.3.{n}")
    session.flush()
    return item


def test_retry_delay_doubles_from_initial_to_the_cap_with_bounded_jitter() -> None:
    retry = RetrySettings(initial_seconds=10, max_seconds=1800, jitter=0.2)
    rng = random.Random(1)
    delays = [retry_delay for retry_delay in (outbox.retry_delay(n, retry, rng) for n in range(1, 12))]
    for n, delay in enumerate(delays, start=1):
        base = min(1800.0, 10.0 * 2 ** (n - 1))
        assert base <= delay <= base * 1.2
    no_jitter = RetrySettings(initial_seconds=10, max_seconds=1800, jitter=0)
    assert [outbox.retry_delay(n, no_jitter) for n in (1, 2, 3, 8, 20)] == [10, 20, 40, 1280, 1800]


def test_enqueue_refuses_a_row_without_its_file(tmp_path: Path, db_url: str) -> None:
    sessions = make_sessions(db_url)
    with transaction(sessions) as session, pytest.raises(FileNotFoundError):
        outbox.enqueue(session, result_id=None, study_uid="1", destination="pacs", path=tmp_path / "missing.dcm",
                       sop_class_uid="1", sop_instance_uid="1")


def test_claim_is_atomic_and_only_takes_due_rows_of_its_destination(tmp_path: Path, db_url: str) -> None:
    sessions = make_sessions(db_url)
    with transaction(sessions) as session:
        due = _item(session, tmp_path, "pacs", 1)
        later = _item(session, tmp_path, "pacs", 2)
        later.next_attempt_at = utcnow() + dt.timedelta(hours=1)
        _item(session, tmp_path, "other", 3)
        due_id = due.id
    now = utcnow()
    with transaction(sessions) as first, transaction(sessions) as second:
        won_first = outbox.claim(first, "pacs", now, 60, 10)
        first.commit()
        won_second = outbox.claim(second, "pacs", now, 60, 10)
    assert won_first == [due_id] and won_second == []
    with transaction(sessions) as session:
        row = session.get(OutboxItem, due_id)
        assert row.state == "sending" and row.attempts == 1


def test_interrupted_send_returns_to_pending_after_its_lease_and_is_audited(tmp_path: Path, db_url: str) -> None:
    sessions = make_sessions(db_url)
    with transaction(sessions) as session:
        item_id = _item(session, tmp_path).id
    start = utcnow()
    with transaction(sessions) as session:
        assert outbox.claim(session, "pacs", start, 5, 10) == [item_id]
    with transaction(sessions) as session:
        assert outbox.recover_interrupted(session, start + dt.timedelta(seconds=1)) == 0  # lease still valid
    with transaction(sessions) as session:
        assert outbox.recover_interrupted(session, start + dt.timedelta(seconds=6)) == 1
    with transaction(sessions) as session:
        assert session.get(OutboxItem, item_id).state == "pending"
        event = session.execute(select(AuditEvent).where(AuditEvent.action == "interrupted-attempt")).scalar_one()
        assert "duplicate" in (event.reason or "") and event.detail["attempt"] == 1


def test_failures_back_off_then_give_up_with_the_reason_and_manual_retry_reopens(
        tmp_path: Path, db_url: str) -> None:
    sessions = make_sessions(db_url)
    retry = RetrySettings(initial_seconds=10, max_seconds=100, jitter=0, give_up_after_seconds=3600)
    with transaction(sessions) as session:
        item_id = _item(session, tmp_path).id
    start = utcnow()
    with transaction(sessions) as session:
        outbox.claim(session, "pacs", start, 60, 10)
        item = outbox.mark_failed_attempt(session, item_id, reason="connection refused", peer="pacs",
                                          status="no-association", retry=retry, now=start)
        assert item.state == "pending"
        assert abs((item.next_attempt_at - start).total_seconds() - 10) < 0.01
    late = start + dt.timedelta(seconds=3601)
    with transaction(sessions) as session:
        outbox.claim(session, "pacs", late, 60, 10)
        item = outbox.mark_failed_attempt(session, item_id, reason="connection refused", peer="pacs",
                                          status="no-association", retry=retry, now=late)
        assert item.state == "failed"
        assert item.last_error.startswith("gave up after 2 attempts") and "connection refused" in item.last_error
    with transaction(sessions) as session:
        actions = [e.action for e in session.execute(
            select(AuditEvent).where(AuditEvent.category == "delivery").order_by(AuditEvent.id)).scalars()]
        assert actions == ["attempt", "attempt", "gave-up"]
        assert outbox.retry(session, None, actor="tester") == [item_id]
    with transaction(sessions) as session:
        item = session.get(OutboxItem, item_id)
        assert item.state == "pending" and item.retry_window_start is not None
        assert session.execute(select(AuditEvent).where(AuditEvent.action == "manual-retry")).scalar_one().actor \
            == "tester"


def test_holding_a_destination_delays_only_its_own_pending_rows(tmp_path: Path, db_url: str) -> None:
    sessions = make_sessions(db_url)
    with transaction(sessions) as session:
        held = _item(session, tmp_path, "dead", 1).id
        free = _item(session, tmp_path, "alive", 2).id
    until = utcnow() + dt.timedelta(minutes=5)
    with transaction(sessions) as session:
        assert outbox.hold_destination(session, "dead", until) == 1
    with transaction(sessions) as session:
        assert outbox.due_destinations(session, utcnow()) == ["alive"]
        assert session.get(OutboxItem, free).state == "pending" and session.get(OutboxItem, held).state == "pending"
