"""publish_result: files on disk, result row updated, one outbox row per object and destination, audit."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
from pydicom import dcmread
from sqlalchemy import select

from db.models import AuditEvent, OutboxItem, Result
from db.session import transaction
from dicom_node.report import publish_result
from tests.dicom_node.report.synthetic import (
    make_analysis,
    make_pet_header,
    make_sessions,
    make_settings,
    seed_study,
)
from tests.dicom_node.report.validation import dciodvfy_errors, dsrdump_problems

PACS = {"name": "pacs", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": 4242}
WEB = {"name": "web", "kind": "stow", "url": "http://127.0.0.1:8042/dicom-web"}


def test_publish_writes_objects_and_queues_one_row_per_object_and_destination(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, destinations=[PACS, WEB], return_to_sender=True)
    pacs = next(peer for peer in settings.node.allowed_calling_aes if peer.ae_title == "PACS")
    pacs.port = 104  # results go back to it too
    sessions = make_sessions(db_url)
    pet = make_pet_header()
    with transaction(sessions) as session:
        study, result = seed_study(session, pet, calling_ae="PACS")
        analysis = make_analysis(pet_series_uid=study.pet_series_uid, ct_series_uid=study.ct_series_uid)
        items = publish_result(session, settings, study, result, analysis, pet)
        result_id = result.id
    with transaction(sessions) as session:
        result = session.get(Result, result_id)
        assert result is not None and result.sr_sop_instance_uid and result.sc_series_uid
        rows = session.execute(select(OutboxItem)).scalars().all()
        assert len(rows) == len(items) == 3 * 5  # SR + 4 SC, to pacs, web and the sender
        assert {r.destination for r in rows} == {"pacs", "web", "sender:PACS"}
        assert all(r.state == "pending" and r.attempts == 0 and Path(r.path).is_file() for r in rows)
        assert all(Path(r.path).is_relative_to(settings.storage.results_directory) for r in rows)
        sr_rows = [r for r in rows if r.sop_instance_uid == result.sr_sop_instance_uid]
        assert len(sr_rows) == 3 and sr_rows[0].sop_class_uid == "1.2.840.10008.5.1.4.1.1.88.34"
        events = session.execute(select(AuditEvent).where(AuditEvent.category == "result")).scalars().all()
        assert [e.action for e in events] == ["published"]
        assert events[0].detail["destinations"] == ["pacs", "web", "sender:PACS"]
        assert events[0].sop_instance_uid == result.sr_sop_instance_uid
    sr_path = Path(sr_rows[0].path)
    assert dciodvfy_errors(sr_path) == [] and dsrdump_problems(sr_path)[:2] == (0, [])
    sr = dcmread(sr_path)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    referenced = {s.SeriesInstanceUID: len(s.ReferencedSOPSequence) for s in evidence}
    assert referenced == {study.pet_series_uid: 2, study.ct_series_uid: 3}  # every analysed instance
    sc = [dcmread(r.path) for r in rows if r.destination == "pacs" and r.sop_class_uid.endswith(".7")]
    assert {d.SeriesInstanceUID for d in sc} == {result.sc_series_uid}
    assert {d.StudyInstanceUID for d in sc + [sr]} == {pet.StudyInstanceUID}


def test_return_to_sender_without_a_known_port_is_audited_not_queued(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, destinations=[PACS], return_to_sender=True)
    sessions = make_sessions(db_url)
    pet = make_pet_header()
    with transaction(sessions) as session:
        study, result = seed_study(session, pet, calling_ae="UNKNOWN_AE")
        publish_result(session, settings, study, result, make_analysis(), pet)
    with transaction(sessions) as session:
        assert {r.destination for r in session.execute(select(OutboxItem)).scalars()} == {"pacs"}
        skipped = session.execute(select(AuditEvent).where(AuditEvent.action == "return-to-sender-skipped")
                                  ).scalar_one()
        assert skipped.outcome == "warning" and "UNKNOWN_AE" in (skipped.reason or "")


def test_superseding_result_references_the_sr_it_replaces(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, destinations=[PACS])
    sessions = make_sessions(db_url)
    pet = make_pet_header()
    with transaction(sessions) as session:
        study, first = seed_study(session, pet)
        publish_result(session, settings, study, first, make_analysis(probability=0.3), pet)
        second = Result(study_id=study.id, job_id=first.job_id, software_version="0.1.0", finding="present")
        session.add(second)
        session.flush()
        items = publish_result(session, settings, study, second, make_analysis(probability=0.9), pet,
                               superseded=first)
        first_sr, second_id = first.sr_sop_instance_uid, second.id
        first_series = first.summary["sr_series_uid"]
    new_sr_path = next(Path(i.path) for i in items if i.sop_class_uid.endswith("88.34"))
    new_sr = hd.sr.srread(new_sr_path)
    predecessors = new_sr.PredecessorDocumentsSequence[0]
    assert predecessors.StudyInstanceUID == pet.StudyInstanceUID
    series = predecessors.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == first_series
    assert series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first_sr
    assert series.ReferencedSOPSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"
    assert dciodvfy_errors(new_sr_path) == [] and dsrdump_problems(new_sr_path)[:2] == (0, [])
    with transaction(sessions) as session:
        old = session.scalars(select(Result).where(Result.sr_sop_instance_uid == first_sr)).one()
        assert old.superseded_by_id == second_id
        superseded = session.execute(select(AuditEvent).where(AuditEvent.action == "superseded")).scalar_one()
        assert superseded.detail["by_result_id"] == second_id
