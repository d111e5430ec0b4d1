"""Reader assessments and reference standards on SQLite and a real PostgreSQL: resolving the study and the
result, append-only history with the latest per reader / per study, one audit event per write in the same
transaction, and clear refusals that write nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, ReaderAssessment, ReferenceStandard, Result
from db.outcomes import (
    OutcomeError,
    ResultNotFound,
    StudyNotFound,
    StudyRef,
    latest_assessments,
    latest_reference_standards,
    list_assessments,
    list_reference_standards,
    record_assessment,
    record_reference_standard,
)
from db.session import transaction
from tests.db.seed import SeededStudy, seed_study


def _study(sessions: sessionmaker[Session], tmp_path: Path, accession: str, **options: object) -> SeededStudy:
    with transaction(sessions) as session:
        return seed_study(session, storage=tmp_path / "storage", results=tmp_path / "results",
                          accession=accession, **options)  # type: ignore[arg-type]


def _assess(session: Session, ref: StudyRef, reader: str = "dr.a", verdict: str = "agree", **extra: object):  # type: ignore[no-untyped-def]
    values = {"reader": reader, "source": "api", "verdict": verdict, "reader_finding": "present", "reason": None,
              "comment": None, "seen_ai_before_report": True, "actor": "token:ris", **extra}
    return record_assessment(session, ref, **values)  # type: ignore[arg-type]


def _count(sessions: sessionmaker[Session], column: object) -> int:
    with sessions() as session:
        return int(session.scalar(select(func.count(column))) or 0)  # type: ignore[arg-type]


def test_an_assessment_by_accession_goes_to_the_current_result_and_is_audited_with_it(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    seeded = _study(sessions, tmp_path, "ACC-1")
    with transaction(sessions) as session:
        row = _assess(session, StudyRef(accession_number="ACC-1"), comment="focus is the bladder wall")
        row_id = row.id
    with sessions() as session:
        stored = session.get(ReaderAssessment, row_id)
        result = session.scalars(select(Result)).one()
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "assessment-recorded")).one()
    assert stored is not None and stored.result_id == result.id and stored.source == "api"
    assert (stored.verdict, stored.reader_finding, stored.comment) == ("agree", "present", "focus is the bladder wall")
    assert event.category == "evaluation" and event.study_uid == seeded.study_uid
    assert event.actor == "token:ris" and event.detail["assessment_id"] == row_id
    assert event.detail["ai_finding"] == "present" and "comment" not in event.detail  # free text stays in its table
    assert event.reason is None and event.outcome == "ok"


def test_a_study_is_found_by_uid_and_a_result_by_its_sr(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    seeded = _study(sessions, tmp_path, "ACC-2")
    with sessions() as session:
        sr_uid = session.scalars(select(Result.sr_sop_instance_uid)).one()
    with transaction(sessions) as session:
        by_uid = _assess(session, StudyRef(study_instance_uid=seeded.study_uid))
        by_sr = _assess(session, StudyRef(accession_number="ACC-2", study_instance_uid=seeded.study_uid),
                        reader="dr.b", sr_sop_instance_uid=sr_uid)
        assert by_uid.result_id == by_sr.result_id


@pytest.mark.parametrize(
    ("ref", "error", "field", "message"),
    [
        (StudyRef(accession_number="NOPE"), StudyNotFound, "accession_number",
         "no study with accession number NOPE on this node"),
        (StudyRef(study_instance_uid="1.2.3.4"), StudyNotFound, "study_instance_uid",
         "no study with Study Instance UID 1.2.3.4 on this node"),
        (StudyRef(), OutcomeError, "study", "name the study: give accession_number or study_instance_uid"),
        (StudyRef(accession_number="ACC-FAILED"), ResultNotFound, "study",
         "study ACC-FAILED has no result yet: nothing to assess"),
    ],
)
def test_unknown_or_unnamed_studies_and_studies_without_a_result_are_refused_and_nothing_is_written(
    sessions: sessionmaker[Session], tmp_path: Path, ref: StudyRef, error: type[Exception], field: str,
    message: str,
) -> None:
    _study(sessions, tmp_path, "ACC-FAILED", state="failed")
    with pytest.raises(error) as raised, transaction(sessions) as session:
        _assess(session, ref)
    assert str(raised.value) == message and raised.value.field == field  # type: ignore[attr-defined]
    assert _count(sessions, ReaderAssessment.id) == 0
    assert _count(sessions, AuditEvent.id) == 3  # the seed's own events only


def test_identifiers_naming_two_different_studies_or_an_sr_of_another_study_are_refused(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    one = _study(sessions, tmp_path, "ACC-ONE")
    _study(sessions, tmp_path, "ACC-TWO")
    with sessions() as session:
        other_sr = session.scalars(select(Result.sr_sop_instance_uid).order_by(Result.id.desc())).first()
    with pytest.raises(OutcomeError, match="name different studies"), transaction(sessions) as session:
        _assess(session, StudyRef(accession_number="ACC-TWO", study_instance_uid=one.study_uid))
    with pytest.raises(OutcomeError, match="is a result of another study"), transaction(sessions) as session:
        _assess(session, StudyRef(accession_number="ACC-ONE"), sr_sop_instance_uid=other_sr)
    with pytest.raises(ResultNotFound, match="no result of this node has the SR 1.2.9"):
        with transaction(sessions) as session:
            _assess(session, StudyRef(accession_number="ACC-ONE"), sr_sop_instance_uid="1.2.9")
    assert _count(sessions, ReaderAssessment.id) == 0


def test_an_accession_number_naming_two_studies_asks_for_the_uid(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    _study(sessions, tmp_path, "ACC-DUP")
    second = _study(sessions, tmp_path, "ACC-DUP")
    with pytest.raises(OutcomeError, match="names more than one study: give study_instance_uid"):
        with transaction(sessions) as session:
            _assess(session, StudyRef(accession_number="ACC-DUP"))
    with transaction(sessions) as session:
        assert _assess(session, StudyRef(study_instance_uid=second.study_uid)).id is not None


def test_assessments_are_append_only_and_the_latest_of_each_reader_counts(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    _study(sessions, tmp_path, "ACC-3")
    ref = StudyRef(accession_number="ACC-3")
    with transaction(sessions) as session:
        first = _assess(session, ref, reader="dr.a", verdict="agree").id
        _assess(session, ref, reader="dr.b", verdict="disagree", reader_finding="absent",
                reason="false-positive-physiological")
        correction = _assess(session, ref, reader="dr.a", verdict="disagree", reader_finding="absent").id
    with sessions() as session:
        rows = list_assessments(session, accession_number="ACC-3")
        latest = latest_assessments(session)
        unrelated = list_assessments(session, accession_number="ACC-OTHER")
    assert [r.id for r in rows] == sorted((r.id for r in rows), reverse=True) and len(rows) == 3
    assert {r.id: r.latest for r in rows}[first] is False and {r.id: r.latest for r in rows}[correction] is True
    (per_result,) = latest.values()
    assert [(a.reader, a.verdict) for a in per_result] == [("dr.b", "disagree"), ("dr.a", "disagree")]
    assert rows[0].accession_number == "ACC-3" and rows[0].ai_finding == "present" and unrelated == []


def test_reference_standards_keep_their_history_and_the_newest_counts(
    sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    seeded = _study(sessions, tmp_path, "ACC-4")
    ref = StudyRef(accession_number="ACC-4")
    with transaction(sessions) as session:
        record_reference_standard(session, ref, recurrence=False, method="imaging-follow-up",
                                  reference_date=dt.date(2025, 1, 2), source="MRI 2025-01", channel="api",
                                  actor="token:ris")
        newest = record_reference_standard(session, ref, recurrence=True, method="histopathology",
                                           reference_date=dt.date(2025, 3, 4), source="biopsy B-17",
                                           channel="csv", actor="alice").id
    with sessions() as session:
        rows = list_reference_standards(session, study_instance_uid=seeded.study_uid)
        latest = latest_reference_standards(session)
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "reference-standard-recorded")).all()
    assert [(r.method, r.latest) for r in rows] == [("histopathology", True), ("imaging-follow-up", False)]
    assert [r.id for r in latest.values()] == [newest] and latest[next(iter(latest))].recurrence is True
    assert [(e.detail["method"], e.detail["channel"], e.actor) for e in events] == [
        ("imaging-follow-up", "api", "token:ris"), ("histopathology", "csv", "alice")]


def test_a_reference_date_in_the_future_is_refused(sessions: sessionmaker[Session], tmp_path: Path) -> None:
    _study(sessions, tmp_path, "ACC-5")
    future = dt.date.today() + dt.timedelta(days=30)
    with pytest.raises(OutcomeError, match=f"date {future.isoformat()} is in the future"):
        with transaction(sessions) as session:
            record_reference_standard(session, StudyRef(accession_number="ACC-5"), recurrence=True,
                                      method="composite", reference_date=future, source=None, channel="api",
                                      actor=None)
    assert _count(sessions, ReferenceStandard.id) == 0
