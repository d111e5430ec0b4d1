"""Assembly refuses, before any job runs, studies of two patients and series whose slices cannot stack."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Job, Study
from dicom_node.assemble import Assembler
from dicom_node.config import Settings
from dicom_node.patient_identity import identity_hashes
from tests.dicom_node.assemble.rows import add_ct, add_pet, add_study


SETTINGS = Settings.model_validate({"assembly": {"settle_seconds": 0, "quiet_seconds": 0.1}})


def _patient(study_uid: str, patient_id: str, name: str = "DOE^JOHN", birth: str = "19500101") -> dict:
    values = {"PatientID": patient_id, "PatientName": name, "PatientBirthDate": birth}
    return identity_hashes(study_uid, values)


def _verdict(sessions: sessionmaker[Session], study_id: int) -> tuple[Study, list[Job], list[AuditEvent]]:
    with sessions() as session:
        study = session.get(Study, study_id)
        assert study is not None
        jobs = list(session.scalars(select(Job).where(Job.study_id == study_id)))
        events = list(
            session.scalars(
                select(AuditEvent).where(
                    AuditEvent.study_uid == study.study_uid, AuditEvent.action == "rejected"
                )
            )
        )
        return study, jobs, events


def test_identity_hashes_ignore_case_and_padding_and_differ_per_study() -> None:
    same = identity_hashes("1.2", {"PatientName": "Doe^John^^ ", "PatientID": " 42"})
    assert same == identity_hashes("1.2", {"PatientName": "DOE^JOHN", "PatientID": "42"})
    assert same != identity_hashes("1.3", {"PatientName": "DOE^JOHN", "PatientID": "42"})
    assert identity_hashes("1.2", {"PatientID": "", "PatientName": None}) == {}
    assert all("DOE" not in value and "42" not in value for value in same.values())


def test_a_ct_naming_another_patient_rejects_the_study_naming_the_attribute(
    sessions: sessionmaker[Session],
) -> None:
    study_id, study_uid = add_study(sessions)
    add_pet(sessions, study_id, **_patient(study_uid, "PID-1"))
    add_ct(sessions, study_id, **_patient(study_uid, "PID-2"))
    Assembler().tick(SETTINGS, sessions)
    study, jobs, events = _verdict(sessions, study_id)
    assert study.state == "rejected" and jobs == []
    reason = study.state_reason or ""
    assert reason.startswith("instances of more than one patient in one study: Patient ID differs (2 values")
    assert "45 CT instance(s)" in reason and "20 PT instance(s)" in reason
    assert "Patient's Name" not in reason and "PID-" not in reason
    assert len(events) == 1 and events[0].detail["rule"] == "patient-conflict" and events[0].reason == reason


def test_same_patient_with_differently_formatted_name_is_analysed(sessions: sessionmaker[Session]) -> None:
    study_id, study_uid = add_study(sessions)
    add_pet(sessions, study_id, **_patient(study_uid, "PID-1", name="Doe^John"))
    add_ct(sessions, study_id, **_patient(study_uid, "PID-1", name="DOE^JOHN^^"))
    Assembler().tick(SETTINGS, sessions)
    study, jobs, _ = _verdict(sessions, study_id)
    assert study.state == "queued" and len(jobs) == 1


def test_name_and_birth_date_conflicts_are_named_too(sessions: sessionmaker[Session]) -> None:
    study_id, study_uid = add_study(sessions)
    add_pet(sessions, study_id, **_patient(study_uid, "PID-1", name="DOE^JOHN", birth="19500101"))
    add_ct(sessions, study_id, **_patient(study_uid, "PID-1", name="ROE^RICHARD", birth="19610202"))
    Assembler().tick(SETTINGS, sessions)
    reason = _verdict(sessions, study_id)[0].state_reason or ""
    assert "Patient's Name differs" in reason and "Patient's Birth Date differs" in reason
    assert "Patient ID" not in reason and "ROE" not in reason and "1961" not in reason


def test_a_ct_slice_with_other_bits_allocated_rejects_the_study_before_a_job(
    sessions: sessionmaker[Session],
) -> None:
    study_id, _ = add_study(sessions)
    add_pet(sessions, study_id, BitsAllocated=16, Rows=48, Columns=48)
    series = add_ct(sessions, study_id, slices=44, BitsAllocated=16, Rows=96, Columns=96)
    add_ct(sessions, study_id, slices=1, z0=44.0, first_number=45, series_uid=series, BitsAllocated=8,
           Rows=96, Columns=96)
    time.sleep(0.2)  # past the 0.1 s quiet period (another, stackable CT series might still have come)
    Assembler().tick(SETTINGS, sessions)
    study, jobs, events = _verdict(sessions, study_id)
    assert study.state == "rejected" and jobs == []
    assert study.state_reason == (
        "CT series mixes Bits Allocated 8 and 16 across its slices; cannot stack them"
    )
    assert len(events) == 1
