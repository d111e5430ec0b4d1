"""Reader assessments and reference standards: recorded (with their audit events) and listed.

Every way in (dashboard, HTTP API, CSV import, DICOM SR) ends here. A study is named by accession number or
Study Instance UID, a result by its SR's SOP Instance UID or as the study's current one; each write adds its
row and its audit event to the caller's session, so the caller's commit stores both or neither. The values'
lists (verdicts, findings, reasons, methods) are `dicom_node.evaluation.vocabulary`'s: callers check them
there first, db/ knows nothing of them (nor of DICOM). Rows are only ever added: a correction is a new row;
per reader the newest assessment of a result counts, per study the newest reference standard.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from db.audit import record
from db.clock import utcnow
from db.models import ReaderAssessment, ReferenceStandard, Result, Study

MAX_NAME = 128
MAX_COMMENT = 4000
FUTURE_SLACK = dt.timedelta(days=1)
"""A reference date may be "tomorrow" in UTC where the site already lives in that day, no later."""


class OutcomeError(ValueError):
    """An assessment or reference standard that cannot be recorded; `field` names the input at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class StudyNotFound(OutcomeError):
    """The study named does not exist on this node."""


class ResultNotFound(OutcomeError):
    """The study has no result to assess, or no result has the SR named."""


class DuplicateAssessment(OutcomeError):
    """The reader's DICOM SR was recorded already (a re-send)."""


@dataclass(frozen=True)
class StudyRef:
    """How a caller names a study: by accession number, by Study Instance UID, or by both when they agree."""

    accession_number: str | None = None
    study_instance_uid: str | None = None

    def describe(self) -> str:
        if self.accession_number:
            return f"accession number {self.accession_number}"
        return f"Study Instance UID {self.study_instance_uid}"


@dataclass(frozen=True)
class AssessmentRow:
    """One stored assessment with what it is about, as listings and the API show it."""

    id: int
    accession_number: str | None
    study_instance_uid: str
    result_id: int
    sr_sop_instance_uid: str | None
    ai_finding: str
    ai_probability: float | None
    reader: str
    source: str
    verdict: str
    reader_finding: str
    reason: str | None
    comment: str | None
    seen_ai_before_report: bool | None
    assessed_at: dt.datetime
    created_at: dt.datetime
    actor: str | None
    sop_instance_uid: str | None
    latest: bool
    """The newest assessment of this reader for this result: the one that counts."""


@dataclass(frozen=True)
class ReferenceRow:
    """One stored reference standard, as listings and the API show it."""

    id: int
    accession_number: str | None
    study_instance_uid: str
    recurrence: bool
    method: str
    reference_date: dt.date | None
    source: str | None
    channel: str
    actor: str | None
    created_at: dt.datetime
    latest: bool
    """The study's newest reference standard: the one that counts."""


def _clean(value: str | None) -> str | None:
    return (value or "").strip() or None


def find_study(session: Session, ref: StudyRef) -> Study:
    """The one study `ref` names, or an error saying why there is none (or more than one)."""
    accession, uid = _clean(ref.accession_number), _clean(ref.study_instance_uid)
    if accession is None and uid is None:
        raise OutcomeError("study", "name the study: give accession_number or study_instance_uid")
    if uid is not None:
        study = session.scalar(select(Study).where(Study.study_uid == uid))
        if study is None:
            raise StudyNotFound("study_instance_uid", f"no study with Study Instance UID {uid} on this node")
        if accession is not None and study.accession_number != accession:
            raise OutcomeError(
                "accession_number",
                f"accession number {accession} and Study Instance UID {uid} name different studies "
                f"(that study's accession number is {study.accession_number or 'empty'})",
            )
        return study
    studies = list(session.scalars(select(Study).where(Study.accession_number == accession).limit(3)))
    if not studies:
        raise StudyNotFound("accession_number", f"no study with accession number {accession} on this node")
    if len(studies) > 1:
        raise OutcomeError(
            "accession_number",
            f"accession number {accession} names more than one study: give study_instance_uid instead",
        )
    return studies[0]


def current_result(session: Session, study: Study) -> Result | None:
    """The study's result that no newer one superseded."""
    return session.scalar(
        select(Result)
        .where(Result.study_id == study.id, Result.superseded_by_id.is_(None))
        .order_by(Result.id.desc())
        .limit(1)
    )


def find_result(session: Session, study: Study, sr_sop_instance_uid: str | None) -> Result:
    """The result with that SR (it must be the study's), else the study's current result."""
    sr_uid = _clean(sr_sop_instance_uid)
    if sr_uid is None:
        result = current_result(session, study)
        if result is None:
            raise ResultNotFound(
                "study", f"study {study.accession_number or study.study_uid} has no result yet: nothing to assess"
            )
        return result
    result = session.scalar(select(Result).where(Result.sr_sop_instance_uid == sr_uid))
    if result is None:
        raise ResultNotFound("sr_sop_instance_uid", f"no result of this node has the SR {sr_uid}")
    if result.study_id != study.id:
        raise OutcomeError("sr_sop_instance_uid", f"the SR {sr_uid} is a result of another study")
    return result


def results_by_sr(session: Session, sr_uids: set[str]) -> list[Result]:
    """Results whose SR is one of `sr_uids`, newest first (how a reader's DICOM SR finds its result)."""
    if not sr_uids:
        return []
    return list(
        session.scalars(
            select(Result).where(Result.sr_sop_instance_uid.in_(sorted(sr_uids))).order_by(Result.id.desc())
        )
    )


def _name(value: str | None, field: str, *, required: bool) -> str | None:
    cleaned = _clean(value)
    if cleaned is None and required:
        raise OutcomeError(field, f"{field} is required")
    if cleaned is not None and len(cleaned) > MAX_NAME:
        raise OutcomeError(field, f"{field} is longer than {MAX_NAME} characters")
    return cleaned


def add_assessment(
    session: Session,
    result: Result,
    *,
    reader: str,
    source: str,
    verdict: str,
    reader_finding: str,
    reason: str | None,
    comment: str | None,
    seen_ai_before_report: bool | None,
    actor: str | None,
    assessed_at: dt.datetime | None = None,
    sop_instance_uid: str | None = None,
    peer: str | None = None,
) -> ReaderAssessment:
    """Add one assessment of `result` and its audit event (the caller commits); values checked by the caller."""
    reader_name = _name(reader, "reader", required=True)
    comment = _clean(comment)
    if comment is not None and len(comment) > MAX_COMMENT:
        raise OutcomeError("comment", f"comment is longer than {MAX_COMMENT} characters")
    if sop_instance_uid is not None and session.scalar(
        select(ReaderAssessment.id).where(ReaderAssessment.sop_instance_uid == sop_instance_uid)
    ):
        raise DuplicateAssessment("sop_instance_uid", f"the SR {sop_instance_uid} was recorded already")
    study = session.get(Study, result.study_id)
    assert study is not None
    now = utcnow()
    row = ReaderAssessment(
        result_id=result.id, study_id=result.study_id, reader=reader_name, source=source, verdict=verdict,
        reader_finding=reader_finding, reason=reason, comment=comment,
        seen_ai_before_report=seen_ai_before_report, assessed_at=assessed_at or now, created_at=now,
        actor=actor, sop_instance_uid=sop_instance_uid,
    )
    session.add(row)
    session.flush()
    record(
        session, "evaluation", "assessment-recorded", study_uid=study.study_uid,
        sop_instance_uid=sop_instance_uid or result.sr_sop_instance_uid, actor=actor, peer=peer,
        assessment_id=row.id, result_id=result.id, result_sr_sop_instance_uid=result.sr_sop_instance_uid,
        reader=reader_name, source=source, verdict=verdict, reader_finding=reader_finding,
        assessment_reason=reason, ai_finding=result.finding, seen_ai_before_report=seen_ai_before_report,
        comment_characters=len(comment or ""),
    )
    return row


def record_assessment(
    session: Session,
    ref: StudyRef,
    *,
    sr_sop_instance_uid: str | None = None,
    reader: str,
    source: str,
    verdict: str,
    reader_finding: str,
    reason: str | None,
    comment: str | None,
    seen_ai_before_report: bool | None,
    actor: str | None,
) -> ReaderAssessment:
    """Resolve the study and its result (named by SR or the current one), then `add_assessment`."""
    study = find_study(session, ref)
    result = find_result(session, study, sr_sop_instance_uid)
    return add_assessment(
        session, result, reader=reader, source=source, verdict=verdict, reader_finding=reader_finding,
        reason=reason, comment=comment, seen_ai_before_report=seen_ai_before_report, actor=actor,
    )


def record_reference_standard(
    session: Session,
    ref: StudyRef,
    *,
    recurrence: bool,
    method: str,
    reference_date: dt.date,
    source: str | None,
    channel: str,
    actor: str | None,
) -> ReferenceStandard:
    """Add one reference standard for the study `ref` names and its audit event (the caller commits)."""
    study = find_study(session, ref)
    if reference_date > (utcnow() + FUTURE_SLACK).date():
        raise OutcomeError("date", f"date {reference_date.isoformat()} is in the future")
    row = ReferenceStandard(
        study_id=study.id, recurrence=recurrence, method=method, reference_date=reference_date,
        source=_name(source, "source", required=False), channel=channel, actor=actor, created_at=utcnow(),
    )
    session.add(row)
    session.flush()
    record(
        session, "evaluation", "reference-standard-recorded", study_uid=study.study_uid, actor=actor,
        reference_standard_id=row.id, recurrence=recurrence, method=method,
        reference_date=reference_date.isoformat(), source=row.source, channel=channel,
    )
    return row


def _latest_assessment_ids() -> Select[Any]:
    return select(func.max(ReaderAssessment.id)).group_by(ReaderAssessment.result_id, ReaderAssessment.reader)


def _latest_reference_ids() -> Select[Any]:
    return select(func.max(ReferenceStandard.id)).group_by(ReferenceStandard.study_id)


def _study_filter(statement: Select, accession_number: str | None, study_instance_uid: str | None,
                  study_id: int | None) -> Select:
    if accession_number:
        statement = statement.where(Study.accession_number == accession_number)
    if study_instance_uid:
        statement = statement.where(Study.study_uid == study_instance_uid)
    if study_id is not None:
        statement = statement.where(Study.id == study_id)
    return statement


def list_assessments(
    session: Session,
    *,
    accession_number: str | None = None,
    study_instance_uid: str | None = None,
    study_id: int | None = None,
    assessment_id: int | None = None,
    limit: int = 1000,
) -> list[AssessmentRow]:
    """Assessments, newest first, optionally of one accession number or study (or the one with that id)."""
    statement = _study_filter(
        select(ReaderAssessment, Study.accession_number, Study.study_uid, Result.sr_sop_instance_uid,
               Result.finding, Result.probability, ReaderAssessment.id.in_(_latest_assessment_ids()))
        .join(Result, Result.id == ReaderAssessment.result_id)
        .join(Study, Study.id == ReaderAssessment.study_id),
        accession_number, study_instance_uid, study_id,
    ).order_by(ReaderAssessment.id.desc()).limit(limit)
    if assessment_id is not None:
        statement = statement.where(ReaderAssessment.id == assessment_id)
    return [
        AssessmentRow(
            id=a.id, accession_number=accession, study_instance_uid=study_uid, result_id=a.result_id,
            sr_sop_instance_uid=sr_uid, ai_finding=finding, ai_probability=probability, reader=a.reader,
            source=a.source, verdict=a.verdict, reader_finding=a.reader_finding, reason=a.reason,
            comment=a.comment, seen_ai_before_report=a.seen_ai_before_report, assessed_at=a.assessed_at,
            created_at=a.created_at, actor=a.actor, sop_instance_uid=a.sop_instance_uid, latest=bool(latest),
        )
        for a, accession, study_uid, sr_uid, finding, probability, latest in session.execute(statement)
    ]


def list_reference_standards(
    session: Session,
    *,
    accession_number: str | None = None,
    study_instance_uid: str | None = None,
    study_id: int | None = None,
    reference_id: int | None = None,
    limit: int = 1000,
) -> list[ReferenceRow]:
    """Reference standards, newest first, optionally of one accession number or study (or the one with that id)."""
    statement = _study_filter(
        select(ReferenceStandard, Study.accession_number, Study.study_uid,
               ReferenceStandard.id.in_(_latest_reference_ids()))
        .join(Study, Study.id == ReferenceStandard.study_id),
        accession_number, study_instance_uid, study_id,
    ).order_by(ReferenceStandard.id.desc()).limit(limit)
    if reference_id is not None:
        statement = statement.where(ReferenceStandard.id == reference_id)
    return [
        ReferenceRow(
            id=r.id, accession_number=accession, study_instance_uid=study_uid, recurrence=r.recurrence,
            method=r.method, reference_date=r.reference_date, source=r.source, channel=r.channel, actor=r.actor,
            created_at=r.created_at, latest=bool(latest),
        )
        for r, accession, study_uid, latest in session.execute(statement)
    ]


def chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    """IN lists of a size every database accepts."""
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def latest_assessments(session: Session, result_ids: list[int] | None = None) -> dict[int, list[ReaderAssessment]]:
    """Per result, the newest assessment of each reader (the ones that count), oldest reader first."""
    statement = select(ReaderAssessment).where(ReaderAssessment.id.in_(_latest_assessment_ids()))
    found: dict[int, list[ReaderAssessment]] = {}
    for chunk in [None] if result_ids is None else chunks(result_ids):
        chosen = statement if chunk is None else statement.where(ReaderAssessment.result_id.in_(chunk))
        for row in session.scalars(chosen.order_by(ReaderAssessment.id)):
            found.setdefault(row.result_id, []).append(row)
    return found


def latest_reference_standards(session: Session, study_ids: list[int] | None = None) -> dict[int, ReferenceStandard]:
    """Per study, its newest reference standard (the one that counts)."""
    statement = select(ReferenceStandard).where(ReferenceStandard.id.in_(_latest_reference_ids()))
    found: dict[int, ReferenceStandard] = {}
    for chunk in [None] if study_ids is None else chunks(study_ids):
        chosen = statement if chunk is None else statement.where(ReferenceStandard.study_id.in_(chunk))
        found.update((row.study_id, row) for row in session.scalars(chosen))
    return found
