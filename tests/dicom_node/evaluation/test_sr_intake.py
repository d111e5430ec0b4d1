"""Readers' assessment SRs (built with highdicom): which content the node reads and how it decides, and the
intake over a real database — recorded once, refused with the reason, or ignored when it is no assessment."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Instance, ReaderAssessment, Result, Study
from db.session import transaction
from dicom_node.evaluation.sr_intake import AssessmentIntake, SrAssessmentError, judge, read_sr
from dicom_node.evaluation.vocabulary import ReaderFinding, Reason, Verdict
from tests.db.seed import seed_study
from tests.dicom_node.evaluation.reader_sr import reader_sr, save, study_object
from tests.support.settings import make_settings

NODE_SR = study_object("1.2.826.0.1.1", "1.2.826.0.1.1.9")


@pytest.mark.parametrize(("reference", "reader_says", "ai_said", "verdict"), [
    ("evidence", "present", "present", Verdict.AGREE),
    ("evidence", "absent", "present", Verdict.DISAGREE),
    ("predecessor", "absent", "present", Verdict.MODIFIED),
    ("predecessor", "indeterminate", "undetermined", Verdict.AGREE),
    ("content", "present", "absent", Verdict.DISAGREE),
])
def test_the_verdict_follows_the_reader_finding_and_how_the_node_sr_is_referenced(
    reference: str, reader_says: str, ai_said: str, verdict: Verdict
) -> None:
    reading = read_sr(reader_sr(NODE_SR, finding=reader_says, reference=reference))
    assert NODE_SR.SOPInstanceUID in reading.referenced_srs
    judged = judge(reading, ai_said, NODE_SR.SOPInstanceUID)
    assert (judged.verdict, judged.reader_finding.value) == (verdict, reader_says)


def test_the_node_s_text_items_give_verdict_reason_comment_and_seen_first() -> None:
    sr = reader_sr(NODE_SR, finding="absent", texts={"verdict": "modified", "reason": "false-positive-physiological",
                                                     "comment": "bladder diverticulum", "seen": "no"})
    judged = judge(read_sr(sr), "present", NODE_SR.SOPInstanceUID)
    assert judged.verdict is Verdict.MODIFIED and judged.reason is Reason.FALSE_POSITIVE_PHYSIOLOGICAL
    assert (judged.reader_finding, judged.comment, judged.seen_ai_before_report) == (
        ReaderFinding.ABSENT, "bladder diverticulum", False)


@pytest.mark.parametrize(("finding", "texts", "message"), [
    (None, {}, "no Recurrent malignancy (111338, DCM) item: the reader's finding is not stated"),
    (["present", "absent"], {}, "conflicting Recurrent malignancy (111338, DCM) values: absent, present"),
    ("present", {"reason": "looks odd"}, "AI_REASON: 'looks odd' is not one of false-positive-physiological"),
    ("present", {"verdict": "perhaps"}, "AI_VERDICT: 'perhaps' is not one of agree, disagree, modified"),
])
def test_an_sr_that_cannot_be_an_assessment_says_why(finding: object, texts: dict, message: str) -> None:
    with pytest.raises(SrAssessmentError) as raised:
        sr = reader_sr(NODE_SR, finding=finding, texts=texts)  # type: ignore[arg-type]
        judge(read_sr(sr), "present", NODE_SR.SOPInstanceUID)
    assert str(raised.value).startswith(message)


def _received(sessions: sessionmaker[Session], folder: Path, sr: Dataset, calling_ae: str = "READER") -> str:
    """The SR stored as the receiver leaves an object it does not analyse."""
    path = save(sr, folder)
    with transaction(sessions) as session:
        study = session.scalars(select(Study).where(Study.study_uid == sr.StudyInstanceUID)).one()
        session.add(Instance(study_id=study.id, study_uid=study.study_uid, series_uid=sr.SeriesInstanceUID,
                             sop_instance_uid=sr.SOPInstanceUID, sop_class_uid=sr.SOPClassUID,
                             transfer_syntax_uid=ExplicitVRLittleEndian, path=str(path),
                             size_bytes=path.stat().st_size, sha256="0" * 64, analysable=False, modality="SR",
                             calling_ae=calling_ae))
    return str(sr.SOPInstanceUID)


def _events(sessions: sessionmaker[Session], action: str) -> list[AuditEvent]:
    with sessions() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == action)))


def test_intake_records_a_reader_sr_once_and_refuses_or_ignores_the_others(
    sqlite_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    sessions = sqlite_sessions
    settings = make_settings(tmp_path, "sqlite://")
    with transaction(sessions) as session:
        seeded = seed_study(session, storage=tmp_path / "storage", results=tmp_path / "results",
                            accession="ACC-SR")
    with sessions() as session:
        result = session.scalars(select(Result)).one()
    node_sr = study_object(seeded.study_uid, result.sr_sop_instance_uid)
    folder = tmp_path / "received"
    reader = _received(sessions, folder, reader_sr(node_sr, finding="absent", reference="predecessor",
                                                   texts={"reason": "false-positive-physiological"}))
    stranger = _received(sessions, folder, reader_sr(study_object(seeded.study_uid), finding="absent"))
    unrelated = _received(sessions, folder, reader_sr(node_sr, finding=None, reference="none"))
    _received(sessions, folder, _own_sr_back(node_sr), "PACS")
    intake = AssessmentIntake()

    assert intake.read_new_srs(settings, sessions) == 3
    with sessions() as session:
        (recorded,) = session.scalars(select(ReaderAssessment)).all()
    assert (recorded.sop_instance_uid, recorded.source, recorded.reader, recorded.actor) == (
        reader, "dicom", "Reader^Rita", "dicom:READER")
    assert (recorded.verdict, recorded.reader_finding, recorded.reason) == (
        "modified", "absent", "false-positive-physiological")
    (refused,) = _events(sessions, "assessment-sr-refused")
    assert refused.sop_instance_uid == stranger and refused.outcome == "error"
    assert "references no result of this node" in (refused.reason or "")
    (ignored,) = _events(sessions, "assessment-sr-ignored")
    assert ignored.sop_instance_uid == unrelated and ignored.outcome == "ok"
    assert [e.sop_instance_uid for e in _events(sessions, "assessment-recorded")] == [reader]

    assert intake.read_new_srs(settings, sessions) == 0
    assert AssessmentIntake().read_new_srs(settings, sessions) == 0  # after a restart: decided ones stay decided


def _own_sr_back(node_sr: Dataset) -> Dataset:
    """The node's own SR, routed back to it by the PACS: never an assessment."""
    sr = reader_sr(study_object(node_sr.StudyInstanceUID), finding="present")
    sr.SOPInstanceUID = node_sr.SOPInstanceUID
    sr.SeriesInstanceUID = generate_uid()
    if hasattr(sr, "file_meta"):
        sr.file_meta.MediaStorageSOPInstanceUID = node_sr.SOPInstanceUID
    return sr


def test_intake_looks_only_past_rows_settled_long_ago_and_still_finds_new_srs(
    sqlite_sessions: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dicom_node.evaluation.sr_intake.SETTLE_SECONDS", 0.0)
    settings = make_settings(tmp_path, "sqlite://")
    with transaction(sqlite_sessions) as session:
        seeded = seed_study(session, storage=tmp_path / "storage", results=tmp_path / "results", accession="A")
    with sqlite_sessions() as session:
        node_sr = study_object(seeded.study_uid, session.scalars(select(Result.sr_sop_instance_uid)).one())
        newest = max(session.scalars(select(Instance.id)))
    intake = AssessmentIntake()
    assert intake.read_new_srs(settings, sqlite_sessions) == 0 and intake.after_id == newest
    _received(sqlite_sessions, tmp_path / "sr", reader_sr(node_sr, finding="present"))
    assert intake.read_new_srs(settings, sqlite_sessions) == 1
    with sqlite_sessions() as session:
        assert session.scalars(select(ReaderAssessment.verdict)).one() == "agree"


def test_intake_refuses_an_sr_naming_no_reader_and_one_whose_stored_file_is_unreadable(
    sqlite_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, "sqlite://")
    with transaction(sqlite_sessions) as session:
        seeded = seed_study(session, storage=tmp_path / "storage", results=tmp_path / "results", accession="A")
    with sqlite_sessions() as session:
        node_sr = study_object(seeded.study_uid, session.scalars(select(Result.sr_sop_instance_uid)).one())
    anonymous = reader_sr(node_sr, finding="present", verified=False)
    anonymous.ContentSequence = [item for item in anonymous.ContentSequence if item.ValueType != "PNAME"]
    nobody = _received(sqlite_sessions, tmp_path / "sr", anonymous)
    broken = _received(sqlite_sessions, tmp_path / "sr", reader_sr(node_sr, finding="absent"))
    (tmp_path / "sr" / f"{broken}.dcm").write_bytes(b"not a DICOM file")

    assert AssessmentIntake().read_new_srs(settings, sqlite_sessions) == 2
    reasons = {e.sop_instance_uid: e.reason or "" for e in _events(sqlite_sessions, "assessment-sr-refused")}
    assert "names no reader" in reasons[nobody]
    assert reasons[broken].startswith("stored SR unreadable: InvalidDicomError")
    with sqlite_sessions() as session:
        assert session.scalars(select(ReaderAssessment)).all() == []
