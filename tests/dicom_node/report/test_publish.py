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
    seed_study,
)
from tests.dicom_node.report.synthetic_findings import make_analysis_with_findings, seed_analysed_series
from tests.dicom_node.report.validation import dciodvfy_errors, dsrdump_problems
from tests.support.settings import make_settings

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"

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
        analysis, pet_headers, ct_headers = seed_analysed_series(session, study, pet, tmp_path / "incoming")
        items = publish_result(session, settings, study, result, analysis, pet)
        result_id = result.id
    with transaction(sessions) as session:
        result = session.get(Result, result_id)
        assert result is not None and result.sr_sop_instance_uid and result.sc_series_uid
        rows = session.execute(select(OutboxItem)).scalars().all()
        assert len(rows) == len(items) == 3 * 6  # SR + SEG + 4 SC, to pacs, web and the sender
        assert {r.destination for r in rows} == {"pacs", "web", "sender:PACS"}
        assert all(r.state == "pending" and r.attempts == 0 and Path(r.path).is_file() for r in rows)
        assert all(Path(r.path).is_relative_to(settings.storage.results_directory) for r in rows)
        sr_rows = [r for r in rows if r.sop_instance_uid == result.sr_sop_instance_uid]
        assert len(sr_rows) == 3 and sr_rows[0].sop_class_uid == "1.2.840.10008.5.1.4.1.1.88.34"
        seg_rows = [r for r in rows if r.sop_class_uid == SEG_CLASS]
        assert len(seg_rows) == 3 and {r.sop_instance_uid for r in seg_rows} == {result.summary["seg_sop_instance_uid"]}
        assert result.summary["seg_segments"] == {"region": 1, "bladder": 2, "focus-1": 3, "focus-2": 4}
        events = session.execute(select(AuditEvent).where(AuditEvent.category == "result")).scalars().all()
        assert [e.action for e in events] == ["published"]
        assert events[0].detail["destinations"] == ["pacs", "web", "sender:PACS"]
        assert events[0].sop_instance_uid == result.sr_sop_instance_uid
        assert events[0].detail["seg_sop_instance_uid"] == result.summary["seg_sop_instance_uid"]
        assert events[0].detail["seg_series_uid"] == result.summary["seg_series_uid"]
    sr_path = Path(sr_rows[0].path)
    assert dciodvfy_errors(sr_path) == [] and dsrdump_problems(sr_path)[:2] == (0, [])
    sr = dcmread(sr_path)
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    referenced = {s.SeriesInstanceUID: len(s.ReferencedSOPSequence) for s in evidence}
    assert referenced[study.pet_series_uid] == len(pet_headers)  # every analysed instance
    assert referenced[study.ct_series_uid] == len(ct_headers)
    seg_path = Path(seg_rows[0].path)
    assert dciodvfy_errors(seg_path) == []
    seg = hd.seg.segread(seg_path)
    assert seg.SeriesNumber == settings.results.seg_series_number
    pet_uids = {str(h.SOPInstanceUID) for h in pet_headers}
    assert {uid for _, _, uid in seg.get_source_image_uids()} <= pet_uids
    sc = [dcmread(r.path) for r in rows if r.destination == "pacs" and r.sop_class_uid.endswith(".7")]
    assert {d.SeriesInstanceUID for d in sc} == {result.sc_series_uid}
    assert {d.StudyInstanceUID for d in sc + [sr, seg]} == {pet.StudyInstanceUID}


def test_seg_can_be_turned_off(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, destinations=[PACS], seg_enabled=False)
    sessions = make_sessions(db_url)
    pet = make_pet_header()
    with transaction(sessions) as session:
        study, result = seed_study(session, pet)
        analysis, _, _ = seed_analysed_series(session, study, pet, tmp_path / "incoming")
        items = publish_result(session, settings, study, result, analysis, pet)
        assert result.summary["seg_sop_instance_uid"] is None
    assert len(items) == 5 and not any(i.sop_class_uid == SEG_CLASS for i in items)


def test_unreadable_analysed_instance_is_audited_and_the_rest_still_published(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, destinations=[PACS])
    sessions = make_sessions(db_url)
    pet = make_pet_header()
    with transaction(sessions) as session:
        study, result = seed_study(session, pet)  # its instance rows point at files that do not exist
        items = publish_result(session, settings, study, result, make_analysis_with_findings(
            pet_series_uid=study.pet_series_uid, ct_series_uid=study.ct_series_uid), pet)
    with transaction(sessions) as session:
        skipped = session.execute(select(AuditEvent).where(AuditEvent.action == "image-references-skipped")
                                  ).scalars().all()
        assert {e.series_uid for e in skipped} == {study.pet_series_uid, study.ct_series_uid}
        assert all(e.outcome == "warning" and "unreadable" in (e.reason or "") for e in skipped)
        published = session.execute(select(AuditEvent).where(AuditEvent.action == "published")).scalar_one()
        assert published.detail["seg_sop_instance_uid"] is None
    assert len(items) == 5 and all(Path(i.path).is_file() for i in items)  # SR + 4 SC, no SEG


def test_headers_the_analysis_read_are_used_without_reading_the_files_again(
    tmp_path: Path, db_url: str
) -> None:
    settings = make_settings(tmp_path, db_url, destinations=[PACS])
    sessions = make_sessions(db_url)
    pet = make_pet_header()
    with transaction(sessions) as session:
        study, result = seed_study(session, pet)
        analysis, pet_headers, ct_headers = seed_analysed_series(session, study, pet, tmp_path / "incoming")
        analysis.series_headers = {str(study.pet_series_uid): pet_headers,
                                   str(study.ct_series_uid): ct_headers}
        for path in (tmp_path / "incoming").rglob("*.dcm"):
            path.unlink()  # reading them now would fail: the report must draw on the analysis's headers
        items = publish_result(session, settings, study, result, analysis, pet)
    with transaction(sessions) as session:
        actions = set(session.scalars(select(AuditEvent.action).where(AuditEvent.category == "result")))
        assert actions == {"published"}
    seg_path = next(Path(i.path) for i in items if i.sop_class_uid == SEG_CLASS)
    seg_sources = {uid for _, _, uid in hd.seg.segread(seg_path).get_source_image_uids()}
    assert seg_sources and seg_sources <= {str(h.SOPInstanceUID) for h in pet_headers}


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


def test_superseding_result_references_the_sr_and_seg_it_replaces(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, destinations=[PACS])
    sessions = make_sessions(db_url)
    pet = make_pet_header()
    with transaction(sessions) as session:
        study, first = seed_study(session, pet)
        analysis, _, _ = seed_analysed_series(session, study, pet, tmp_path / "incoming", probability=0.3)
        publish_result(session, settings, study, first, analysis, pet)
        second = Result(study_id=study.id, job_id=first.job_id, software_version="0.1.0", finding="present")
        session.add(second)
        session.flush()
        analysis.probability = 0.9
        items = publish_result(session, settings, study, second, analysis, pet,
                               superseded=first)
        first_sr, second_id = first.sr_sop_instance_uid, second.id
        first_series = first.summary["sr_series_uid"]
        first_seg, second_seg = first.summary["seg_sop_instance_uid"], second.summary["seg_sop_instance_uid"]
    assert first_seg and second_seg and first_seg != second_seg
    new_seg = dcmread(next(Path(i.path) for i in items if i.sop_class_uid == SEG_CLASS))
    assert new_seg.SOPInstanceUID == second_seg
    assert f"Supersedes the earlier AI SEG {first_seg}" in new_seg.ImageComments
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
        assert superseded.detail["superseded_seg_sop_instance_uid"] == first_seg
        assert superseded.detail["by_seg_sop_instance_uid"] == second_seg


def test_seg_that_cannot_be_built_is_audited_and_the_sr_and_sc_still_go(tmp_path: Path, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url, destinations=[PACS])
    sessions = make_sessions(db_url)
    pet = make_pet_header()
    with transaction(sessions) as session:
        study, result = seed_study(session, pet)
        analysis, _, _ = seed_analysed_series(session, study, pet, tmp_path / "incoming")
        assert analysis.findings is not None and analysis.findings.bladder_mask is not None
        analysis.findings.bladder_mask = analysis.findings.bladder_mask[:, :-2]  # not on the PET crop grid
        items = publish_result(session, settings, study, result, analysis, pet)
    with transaction(sessions) as session:
        skipped = session.execute(select(AuditEvent).where(AuditEvent.action == "segmentation-skipped")
                                  ).scalar_one()
        assert skipped.outcome == "warning" and "bladder mask has shape" in (skipped.reason or "")
    assert len(items) == 5 and not any(i.sop_class_uid == SEG_CLASS for i in items)
