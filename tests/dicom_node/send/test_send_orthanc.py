"""The sender against a real Orthanc: delivery, confirmation, outages, refusal, STOW-RS, crash recovery."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from db.clock import utcnow
from db.models import AuditEvent, OutboxItem
from db.session import transaction
from dicom_node.config import Settings
from dicom_node.report import publish_result
from dicom_node.send import Sender
from tests.dicom_node.report.synthetic import (
    make_analysis,
    make_pet_header,
    make_sessions,
    seed_study,
)
from tests.support.orthanc import OrthancServer
from tests.support.settings import make_settings

OBJECTS = 5  # one SR and four SC images per result


def _publish(settings: Settings, sessions: sessionmaker[Session]) -> tuple[str, list[str]]:
    pet = make_pet_header()
    with transaction(sessions) as session:
        study, result = seed_study(session, pet)
        items = publish_result(session, settings, study, result, make_analysis(), pet)
        uids = sorted({i.sop_instance_uid for i in items})
    return str(pet.StudyInstanceUID), uids


def _dest(orthanc: OrthancServer, name: str = "pacs", **extra: object) -> dict:
    return {"name": name, "kind": "dicom", "ae_title": orthanc.aet, "host": "127.0.0.1",
            "port": orthanc.dicom_port, **extra}


def _rows(sessions: sessionmaker[Session]) -> list[OutboxItem]:
    with transaction(sessions) as session:
        return list(session.execute(select(OutboxItem).order_by(OutboxItem.id)).scalars())


def _events(sessions: sessionmaker[Session], action: str) -> list[AuditEvent]:
    with transaction(sessions) as session:
        return list(session.execute(select(AuditEvent).where(AuditEvent.action == action)).scalars())


def _confirm_failures(sessions: sessionmaker[Session]) -> list[str | None]:
    return [event.reason for event in _events(sessions, "confirm-failed")]


def _tick_until(sender: Sender, sessions: sessionmaker[Session], done, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sender.tick(wait=True)
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not reached; outbox: {[(r.destination, r.state, r.last_error) for r in _rows(sessions)]}")


def test_results_reach_orthanc_in_the_source_study_and_are_confirmed_by_cfind(tmp_path: Path, db_url: str) -> None:
    with OrthancServer(tmp_path / "orthanc") as orthanc:
        settings = make_settings(tmp_path, db_url, destinations=[_dest(orthanc, confirm_with_cfind=True)])
        sessions = make_sessions(db_url)
        sender = Sender(settings, sessions)
        study_uid, uids = _publish(settings, sessions)
        sender.tick(wait=True)
        rows = _rows(sessions)
        assert [r.state for r in rows] == ["confirmed"] * OBJECTS, _confirm_failures(sessions)
        assert all(r.delivered_at and r.confirmed_at and r.attempts == 1 for r in rows)
        stored = orthanc.study_instances(study_uid)
        assert sorted(t["SOPInstanceUID"] for t in stored) == uids
        assert {t["Modality"] for t in stored} == {"SR", "OT"}
        assert len(_events(sessions, "stored")) == OBJECTS and len(_events(sessions, "confirmed")) == OBJECTS
        sender.tick(wait=True)  # nothing is ever sent twice
        assert len(_events(sessions, "stored")) == OBJECTS


def test_objects_a_pacs_acknowledges_but_discards_stay_unconfirmed_with_a_warning(
        tmp_path: Path, db_url: str) -> None:
    """An Orthanc whose filter drops every instance after answering Success: C-FIND cannot find them."""
    discard = tmp_path / "discard.lua"
    discard.write_text("function ReceivedInstanceFilter(dicom, origin, info)\n  return false\nend\n")
    with OrthancServer(tmp_path / "orthanc", extra={"LuaScripts": [str(discard)]}) as orthanc:
        settings = make_settings(tmp_path, db_url, destinations=[_dest(orthanc, confirm_with_cfind=True)])
        sessions = make_sessions(db_url)
        sender = Sender(settings, sessions)
        study_uid, _ = _publish(settings, sessions)
        sender.tick(wait=True)
        assert orthanc.study_instances(study_uid) == []
    rows = _rows(sessions)
    assert [r.state for r in rows] == ["delivered"] * OBJECTS
    assert all(r.confirmed_at is None and r.attempts == 1 for r in rows)
    warnings = _events(sessions, "confirm-failed")
    assert len(warnings) == OBJECTS
    assert {w.outcome for w in warnings} == {"warning"}
    assert {w.reason for w in warnings} == {"C-FIND found no match in 4 queries over 1.7 s"}


def test_results_wait_while_orthanc_is_down_and_arrive_exactly_once(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'node.db'}"
    orthanc = OrthancServer(tmp_path / "orthanc")
    settings = make_settings(tmp_path, db_url, destinations=[_dest(orthanc)])
    sessions = make_sessions(db_url)
    sender = Sender(settings, sessions)
    study_uid, uids = _publish(settings, sessions)
    sender.tick(wait=True)
    rows = _rows(sessions)
    assert {r.state for r in rows} == {"pending"} and all(r.attempts == 1 for r in rows)
    assert all("no association" in (r.last_error or "") for r in rows)
    attempts = _events(sessions, "attempt")
    assert len(attempts) == OBJECTS and all(e.outcome == "error" and e.detail["attempt"] == 1 for e in attempts)
    with orthanc:
        _tick_until(sender, sessions, lambda: {r.state for r in _rows(sessions)} == {"delivered"})
        for _ in range(3):
            sender.tick(wait=True)
        assert sorted(t["SOPInstanceUID"] for t in orthanc.study_instances(study_uid)) == uids
        assert orthanc.count_instances() == OBJECTS
        stored = _events(sessions, "stored")
        assert sorted(e.sop_instance_uid for e in stored) == uids  # each object acknowledged exactly once


def test_orthanc_refusing_the_node_fails_with_the_reason_after_the_retry_budget(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'node.db'}"
    with OrthancServer(tmp_path / "orthanc", always_allow_store=False) as orthanc:
        retry = {"initial_seconds": 0.2, "max_seconds": 0.5, "jitter": 0.0, "give_up_after_seconds": 3.0}
        settings = make_settings(tmp_path, db_url, destinations=[_dest(orthanc)], retry=retry)
        sessions = make_sessions(db_url)
        sender = Sender(settings, sessions)
        _publish(settings, sessions)
        _tick_until(sender, sessions, lambda: {r.state for r in _rows(sessions)} == {"failed"})
        rows = _rows(sessions)
        assert all(r.attempts >= 2 for r in rows)
        assert all(r.last_error.startswith("gave up after") and "rejected" in r.last_error for r in rows), \
            rows[0].last_error
        gave_up = _events(sessions, "gave-up")
        assert len(gave_up) == OBJECTS and all("rejected" in (e.reason or "") for e in gave_up)
        assert orthanc.count_instances() == 0


def test_a_dead_destination_does_not_hold_up_a_live_one(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'node.db'}"
    with OrthancServer(tmp_path / "orthanc") as orthanc:
        dead = {"name": "dead", "kind": "dicom", "ae_title": "NOBODY", "host": "127.0.0.1", "port": 9}
        settings = make_settings(tmp_path, db_url, destinations=[dead, _dest(orthanc)],
                                 retry={"initial_seconds": 30, "max_seconds": 60, "jitter": 0.0,
                                        "give_up_after_seconds": 3600})
        sessions = make_sessions(db_url)
        sender = Sender(settings, sessions)
        _publish(settings, sessions)
        sender.tick(wait=True)
        states = {(r.destination, r.state) for r in _rows(sessions)}
        assert states == {("dead", "pending"), ("pacs", "delivered")}
        _publish(settings, sessions)  # a new result while "dead" is held back
        started = time.monotonic()
        sender.tick(wait=True)
        assert time.monotonic() - started < 5
        rows = _rows(sessions)
        assert [r.attempts for r in rows if r.destination == "dead"] == [1] * OBJECTS + [0] * OBJECTS
        assert {r.state for r in rows if r.destination == "pacs"} == {"delivered"}
        assert orthanc.count_instances() == 2 * OBJECTS


def test_stow_rs_delivers_to_orthanc_dicomweb_and_confirms_with_qido(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'node.db'}"
    with OrthancServer(tmp_path / "orthanc", dicomweb=True) as orthanc:
        web = {"name": "web", "kind": "stow", "url": f"{orthanc.url}/dicom-web", "confirm_with_cfind": True}
        settings = make_settings(tmp_path, db_url, destinations=[web])
        sessions = make_sessions(db_url)
        sender = Sender(settings, sessions)
        study_uid, uids = _publish(settings, sessions)
        sender.tick(wait=True)
        rows = _rows(sessions)
        assert [r.state for r in rows] == ["confirmed"] * OBJECTS, _confirm_failures(sessions)
        assert sorted(t["SOPInstanceUID"] for t in orthanc.study_instances(study_uid)) == uids


def test_stow_rs_objects_orthanc_acknowledges_but_discards_are_asked_for_again_then_left_unconfirmed(
        tmp_path: Path) -> None:
    """As over DIMSE: QIDO-RS asks again after 0.2, 0.5 and 1.0 s before the warning."""
    discard = tmp_path / "discard.lua"
    discard.write_text("function ReceivedInstanceFilter(dicom, origin, info)\n  return false\nend\n")
    db_url = f"sqlite:///{tmp_path / 'node.db'}"
    with OrthancServer(tmp_path / "orthanc", dicomweb=True, extra={"LuaScripts": [str(discard)]}) as orthanc:
        web = {"name": "web", "kind": "stow", "url": f"{orthanc.url}/dicom-web", "confirm_with_cfind": True}
        settings = make_settings(tmp_path, db_url, destinations=[web])
        sessions = make_sessions(db_url)
        sender = Sender(settings, sessions)
        study_uid, _ = _publish(settings, sessions)
        started = time.monotonic()
        sender.tick(wait=True)
        took = time.monotonic() - started
        assert orthanc.study_instances(study_uid) == []
    rows = _rows(sessions)
    assert [r.state for r in rows] == ["delivered"] * OBJECTS, [r.last_error for r in rows]
    assert set(_confirm_failures(sessions)) == {"QIDO-RS found no match in 4 queries over 1.7 s"}
    assert took >= 1.7  # the pauses were waited, once for all objects


def test_a_send_interrupted_by_a_crash_is_resent_and_orthanc_keeps_one_copy(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'node.db'}"
    with OrthancServer(tmp_path / "orthanc") as orthanc:
        settings = make_settings(tmp_path, db_url, destinations=[_dest(orthanc)], sending_timeout_seconds=1)
        sessions = make_sessions(db_url)
        sender = Sender(settings, sessions)
        study_uid, uids = _publish(settings, sessions)
        sender.tick(wait=True)
        # The process died after the PACS acknowledged but before the rows were marked delivered.
        with transaction(sessions) as session:
            session.execute(update(OutboxItem).values(state="sending", delivered_at=None,
                                                      next_attempt_at=utcnow() - dt.timedelta(seconds=2)))
        sender.tick(wait=True)
        rows = _rows(sessions)
        assert {r.state for r in rows} == {"delivered"} and {r.attempts for r in rows} == {2}
        assert len(_events(sessions, "interrupted-attempt")) == OBJECTS
        assert orthanc.count_instances() == OBJECTS
        assert sorted(t["SOPInstanceUID"] for t in orthanc.study_instances(study_uid)) == uids
