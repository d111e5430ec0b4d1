"""A proven study whose sender released its association is queued without the settle window; an open or
aborted association, or data after the release, keeps the window. Queueing wakes the workers."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, Study
from db.session import transaction
from dicom_node.assemble import Assembler
from dicom_node.config import Settings
from dicom_node.wake import JOBS, listen
from tests.dicom_node.assemble.rows import add_ct, add_pet, add_study

SETTLE_30S = Settings.model_validate({"assembly": {"settle_seconds": 30, "quiet_seconds": 60}})


def _state(sessions: sessionmaker[Session], study_id: int) -> str:
    with sessions() as session:
        study = session.get(Study, study_id)
        assert study is not None
        return study.state


def _proven_study(sessions: sessionmaker[Session]) -> int:
    study_id, _ = add_study(sessions)
    add_pet(sessions, study_id)
    add_ct(sessions, study_id)
    return study_id


def test_released_sender_skips_the_settle_window(sessions: sessionmaker[Session]) -> None:
    assembler = Assembler()
    study_id = _proven_study(sessions)
    woken: list[bool] = []
    assembler.on_handover = lambda: woken.append(True)
    assembler.tick(SETTLE_30S, sessions)
    assert _state(sessions, study_id) == "receiving"  # proven, settling
    assembler.association_closed({study_id}, released=True)
    assert woken == [True]
    assembler.tick(SETTLE_30S, sessions)
    assert _state(sessions, study_id) == "queued"
    with sessions() as session:
        job = session.scalars(select(Job).where(Job.study_id == study_id)).one()
    assert job.flags["rule"] == "content-proof" and "released" in job.flags["settle"]


def test_another_open_association_to_the_study_keeps_the_settle_window(
    sessions: sessionmaker[Session],
) -> None:
    assembler = Assembler()
    study_id = _proven_study(sessions)
    assembler.delivering = lambda: {study_id}
    assembler.association_closed({study_id}, released=True)
    assembler.tick(SETTLE_30S, sessions)
    assert _state(sessions, study_id) == "receiving"


def test_aborted_association_keeps_the_settle_window(sessions: sessionmaker[Session]) -> None:
    assembler = Assembler()
    study_id = _proven_study(sessions)
    assembler.association_closed({study_id}, released=True)
    assembler.association_closed({study_id}, released=False)  # a second association broke off
    assembler.tick(SETTLE_30S, sessions)
    assert _state(sessions, study_id) == "receiving"


def test_data_after_the_release_keeps_the_settle_window(sessions: sessionmaker[Session]) -> None:
    assembler = Assembler()
    study_id, _ = add_study(sessions)
    add_pet(sessions, study_id)
    assembler.association_closed({study_id}, released=True)
    add_ct(sessions, study_id, when=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1))
    assembler.tick(SETTLE_30S, sessions)
    assert _state(sessions, study_id) == "receiving"


def test_unproven_study_is_not_queued_by_a_release(sessions: sessionmaker[Session]) -> None:
    assembler = Assembler()
    study_id, _ = add_study(sessions)
    add_pet(sessions, study_id, skip=[3])
    add_ct(sessions, study_id)
    assembler.association_closed({study_id}, released=True)
    assembler.tick(SETTLE_30S, sessions)
    assert _state(sessions, study_id) == "receiving"


def test_queueing_a_job_wakes_waiting_workers(db_url: str, sessions: sessionmaker[Session]) -> None:
    assembler = Assembler()
    study_id = _proven_study(sessions)
    waiter = listen(db_url, JOBS)
    try:
        assembler.association_closed({study_id}, released=True)
        assembler.tick(SETTLE_30S, sessions)
        assert waiter.wait(30.0) is True
    finally:
        waiter.close()
    with transaction(sessions) as session:
        assert session.scalars(select(Job.state).where(Job.study_id == study_id)).one() == "queued"
