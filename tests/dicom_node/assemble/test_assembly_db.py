"""Assembly ticks on real databases (SQLite and PostgreSQL): states, jobs, audit, reopening, cheapness."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Instance, Job, JobState, Study
from db.session import transaction
from dicom_node.assemble import Assembler
from dicom_node.config import Settings
from tests.dicom_node.assemble.rows import add_ct, add_pet, add_study


def _settings(**assembly: object) -> Settings:
    return Settings.model_validate({"assembly": {"settle_seconds": 0, "quiet_seconds": 60, **assembly}})


def _study(sessions: sessionmaker[Session], study_id: int) -> Study:
    with sessions() as session:
        study = session.get(Study, study_id)
        assert study is not None
        return study


def _events(sessions: sessionmaker[Session], study_uid: str) -> list[AuditEvent]:
    with sessions() as session:
        return list(
            session.scalars(
                select(AuditEvent)
                .where(AuditEvent.study_uid == study_uid, AuditEvent.category == "study")
                .order_by(AuditEvent.id)
            )
        )


def _jobs(sessions: sessionmaker[Session], study_id: int) -> list[Job]:
    with sessions() as session:
        return list(session.scalars(select(Job).where(Job.study_id == study_id).order_by(Job.id)))


def test_complete_study_is_queued_once_with_audited_transitions(sessions: sessionmaker[Session]) -> None:
    study_id, study_uid = add_study(sessions)
    pet = add_pet(sessions, study_id)
    ct = add_ct(sessions, study_id)
    settings = _settings()
    assembler = Assembler()
    for _ in range(3):
        assembler.tick(settings, sessions)
    study = _study(sessions, study_id)
    assert study.state == "queued" and study.pet_series_uid == pet and study.ct_series_uid == ct
    assert study.completeness_proven_at is not None
    jobs = _jobs(sessions, study_id)
    assert len(jobs) == 1 and jobs[0].state == JobState.QUEUED.value and jobs[0].generation == 1
    assert jobs[0].flags["rule"] == "content-proof" and jobs[0].flags["tracer"] == "PSMA-1007"
    events = _events(sessions, study_uid)
    assert [e.action for e in events] == ["complete", "queued"]
    assert events[0].detail["rule"] == "content-proof" and "PET: all 20 slices" in (events[0].reason or "")


def test_settle_window_delays_a_proven_study_until_it_has_passed(sessions: sessionmaker[Session]) -> None:
    assembler = Assembler()
    study_id, study_uid = add_study(sessions)
    add_pet(sessions, study_id)
    add_ct(sessions, study_id)
    settings = _settings(settle_seconds=30)
    assembler.tick(settings, sessions)
    assert _study(sessions, study_id).state == "receiving"
    assert _jobs(sessions, study_id) == []
    # The last instance arrived 31 s ago: the window is over and the proven study is queued.
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=31)
    with transaction(sessions) as session:
        session.execute(update(Study).where(Study.id == study_id).values(last_received_at=past))
        session.execute(update(Instance).where(Instance.study_id == study_id).values(received_at=past))
    assembler.tick(settings, sessions)
    assert _study(sessions, study_id).state == "queued"
    jobs = _jobs(sessions, study_id)
    assert len(jobs) == 1 and jobs[0].state == JobState.QUEUED.value
    assert [e.action for e in _events(sessions, study_uid)] == ["complete", "queued"]


def test_missing_pet_slice_waits_then_is_rejected_with_the_count(sessions: sessionmaker[Session]) -> None:
    assembler = Assembler()
    study_id, study_uid = add_study(sessions)
    add_pet(sessions, study_id, skip=[7])
    add_ct(sessions, study_id)
    assembler.tick(_settings(), sessions)
    assert _study(sessions, study_id).state == "receiving"
    assembler.tick(_settings(quiet_seconds=0.001), sessions)
    study = _study(sessions, study_id)
    assert study.state == "rejected" and study.state_reason == "PET: 1 of 20 slices missing"
    assert _events(sessions, study_uid)[-1].detail["rule"] == "quiet-period"
    assert _jobs(sessions, study_id) == []


def test_late_instances_reopen_a_queued_study_and_cancel_its_job(sessions: sessionmaker[Session]) -> None:
    assembler = Assembler()
    study_id, study_uid = add_study(sessions)
    pet = add_pet(sessions, study_id, slices=20)
    add_ct(sessions, study_id)
    settings = _settings()
    assembler.tick(settings, sessions)
    assert _study(sessions, study_id).state == "queued"
    add_ct(sessions, study_id, slices=3, z0=46.0)  # a second CT series arrives late
    assembler.tick(settings, sessions)
    study = _study(sessions, study_id)
    assert study.generation == 2
    actions = [e.action for e in _events(sessions, study_uid)]
    assert actions[:3] == ["complete", "queued", "reopened"]
    jobs = _jobs(sessions, study_id)
    assert jobs[0].state == JobState.CANCELLED.value
    assembler.tick(settings, sessions)
    jobs = _jobs(sessions, study_id)
    assert [j.generation for j in jobs] == [1, 2] and jobs[1].state == JobState.QUEUED.value
    assert jobs[1].pet_series_uid == pet


def test_rejected_study_reopens_when_an_acceptable_pet_arrives(sessions: sessionmaker[Session]) -> None:
    assembler = Assembler()
    study_id, _ = add_study(sessions)
    add_pet(sessions, study_id, corrected=["DECY"])
    add_ct(sessions, study_id)
    settings = _settings()
    assembler.tick(settings, sessions)
    study = _study(sessions, study_id)
    assert study.state == "rejected" and "not attenuation-corrected" in (study.state_reason or "")
    add_pet(sessions, study_id)
    assembler.tick(settings, sessions)
    assembler.tick(settings, sessions)
    assert _study(sessions, study_id).state == "queued"


def test_unchanged_receiving_studies_cost_no_instance_queries(sessions: sessionmaker[Session]) -> None:
    assembler = Assembler()
    for _ in range(5):
        study_id, _ = add_study(sessions)
        add_pet(sessions, study_id, skip=[3])
        add_ct(sessions, study_id)
    settings = _settings()
    assembler.tick(settings, sessions)
    statements: list[str] = []
    engine = sessions.kw["bind"]
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        assembler.tick(settings, sessions)
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert not any("FROM instances" in s for s in statements), statements
    assert len(statements) <= 3


def test_lossy_pet_is_rejected_and_a_lossy_ct_flagged_on_each_database(
        sessions: sessionmaker[Session]) -> None:
    lossy_pet_study, _ = add_study(sessions, "ACC-LOSSY-PET")
    add_pet(sessions, lossy_pet_study, LossyImageCompression="01")
    add_ct(sessions, lossy_pet_study)
    lossy_ct_study, _ = add_study(sessions, "ACC-LOSSY-CT")
    add_pet(sessions, lossy_ct_study, LossyImageCompression="00")
    ct = add_ct(sessions, lossy_ct_study)
    with transaction(sessions) as session:  # as received: 5 of its 45 slices in lossy JPEG 2000
        ids = session.scalars(select(Instance.id).where(Instance.series_uid == ct).limit(5)).all()
        session.execute(update(Instance).where(Instance.id.in_(ids))
                        .values(transfer_syntax_uid="1.2.840.10008.1.2.4.91"))
    Assembler().tick(_settings(), sessions)
    rejected = _study(sessions, lossy_pet_study)
    assert rejected.state == "rejected"
    assert (rejected.state_reason or "").startswith("PET is lossy-compressed (20 of 20 slices lossy-compressed: "
                                                    "Lossy Image Compression (0028,2110) is 01)")
    assert _study(sessions, lossy_ct_study).state == "queued"
    (job,) = _jobs(sessions, lossy_ct_study)
    assert job.flags["ct_lossy"] == ("5 of 45 slices lossy-compressed: transfer syntax JPEG 2000 Image "
                                     "Compression (1.2.840.10008.1.2.4.91)")
