"""Readers' assessments sent back as DICOM SRs: recognised off the receiving path and recorded.

A reader (or the reporting system) stores an SR into the study that references the node's SR; the node
stores it like any other object (it never reopens the study: store/instances.py), and `serve` reads new SRs
on a tick of its own, so that receiving stays fast. What is read, precisely (docs/assessments.md):

- the result: any Referenced SOP Instance UID in the Current Requested Procedure Evidence, Pertinent Other
  Evidence or Predecessor Documents sequences, or in a content item's Referenced SOP Sequence, that is the SR
  of one of the node's results (the newest such result when several are referenced);
- the reader's finding: a CODE item "Recurrent malignancy" (111338, DCM) anywhere in the content tree, valued
  Present (52101004, SCT), Absent (272519000, SCT), Undetermined (373068000, SCT) or Indeterminate
  (82334004, SCT); several such items must agree;
- the verdict: a TEXT item (AI_VERDICT, 99LOCAL) agree|disagree|modified when present; otherwise the
  same finding as the AI = agree, another one = modified when the node's SR is in the Predecessor Documents
  Sequence (an edited copy of it) and disagree when it is only referenced;
- the reason, comment and "seen before reporting": TEXT items (AI_REASON, 99LOCAL) with a value of
  `vocabulary.Reason`, (AI_COMMENT, 99LOCAL) and (AI_SEEN_FIRST, 99LOCAL) yes|no;
- the reader: the Verifying Observer Name of a VERIFIED SR, else the Person Name of an Author Observer, else a
  PNAME item "Person Observer Name" (121008, DCM); the time: the Verification DateTime, else Content
  Date/Time (with Timezone Offset From UTC when given, else the node's local time).

An SR that references no result of the node is ignored when it states no finding and none of the node's
items (dose reports, radiology reports and the like) and refused with a clear reason otherwise; either way it
stays stored, and the decision is audited under its SOP Instance UID, which also makes a re-sent SR count
once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.valuerep import DA, DT, TM
from sqlalchemy import exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db import audit
from db.models import AuditEvent, Instance, ReaderAssessment, Result
from db.outcomes import DuplicateAssessment, OutcomeError, add_assessment, results_by_sr
from db.session import transaction
from dicom_node.config import Settings
from dicom_node.evaluation.vocabulary import (
    AI_FINDING_AS_READER,
    AssessmentSource,
    ReaderFinding,
    Reason,
    Verdict,
    VocabularyError,
    parse,
    parse_yes_no,
)

log = logging.getLogger(__name__)

SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
"""Every Structured Report storage class (Basic Text, Enhanced, Comprehensive, Comprehensive 3D, ...)."""
LOCAL = "99LOCAL"
"""The node's private coding scheme (the same designator its own SR uses)."""
RECURRENT_MALIGNANCY = ("111338", "DCM")
PERSON_OBSERVER_NAME = ("121008", "DCM")
VERDICT_ITEM = ("AI_VERDICT", LOCAL)
REASON_ITEM = ("AI_REASON", LOCAL)
COMMENT_ITEM = ("AI_COMMENT", LOCAL)
SEEN_ITEM = ("AI_SEEN_FIRST", LOCAL)
FINDING_VALUES: dict[str, ReaderFinding] = {
    "52101004": ReaderFinding.PRESENT,
    "272519000": ReaderFinding.ABSENT,
    "373068000": ReaderFinding.INDETERMINATE,
    "82334004": ReaderFinding.INDETERMINATE,
}
"""SNOMED CT values of "Recurrent malignancy" (scheme SCT, or SRT in older documents)."""
EVIDENCE_SEQUENCES = ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence",
                      "PredecessorDocumentsSequence")
INTAKE_ACTIONS = ("assessment-sr-refused", "assessment-sr-ignored")
BATCH = 100
SETTLE_SECONDS = 60.0
"""Longer than any instance row's insert takes to commit."""


class SrAssessmentError(ValueError):
    """An SR meant as an assessment that cannot be recorded; the message says what is wrong."""


@dataclass
class SrReading:
    """What an SR says, before it is matched to a result."""

    referenced: set[str] = field(default_factory=set)
    referenced_srs: set[str] = field(default_factory=set)
    """Referenced objects whose class is a Structured Report (the node's SR would be one)."""
    predecessors: set[str] = field(default_factory=set)
    findings: set[ReaderFinding] = field(default_factory=set)
    texts: dict[tuple[str, str], str] = field(default_factory=dict)
    observer_names: list[str] = field(default_factory=list)
    """Person Observer Name items of the content tree, in document order."""

    @property
    def looks_like_assessment(self) -> bool:
        """It states a finding or one of the node's items: without a result to go to, an error. Other SRs
        (dose reports, radiology reports referencing earlier ones) are no concern of the node."""
        return bool(self.findings or self.texts)


def _code(items: Iterable[Dataset] | None) -> tuple[str, str] | None:
    """(value, scheme) of a code sequence's first item; SNOMED's old designator SRT reads as SCT."""
    for item in items or []:
        scheme = str(item.get("CodingSchemeDesignator", "")).strip()
        value = str(item.get("CodeValue", "") or item.get("LongCodeValue", "")).strip()
        return value, "SCT" if scheme == "SRT" else scheme
    return None


def _references(items: Iterable[Dataset] | None, reading: SrReading, predecessor: bool) -> None:
    """Hierarchical SOP references: study items → Referenced Series → Referenced SOP."""
    for study in items or []:
        for series in study.get("ReferencedSeriesSequence") or []:
            for sop in series.get("ReferencedSOPSequence") or []:
                _reference(sop, reading, predecessor)


def _reference(sop: Dataset, reading: SrReading, predecessor: bool = False) -> None:
    uid = str(sop.get("ReferencedSOPInstanceUID", "")).strip()
    if not uid:
        return
    reading.referenced.add(uid)
    if str(sop.get("ReferencedSOPClassUID", "")).startswith(SR_CLASS_PREFIX):
        reading.referenced_srs.add(uid)
    if predecessor:
        reading.predecessors.add(uid)


def _content(items: Iterable[Dataset] | None) -> Iterator[Dataset]:
    """Every content item of the tree, depth first, in document order."""
    for item in items or []:
        yield item
        yield from _content(item.get("ContentSequence"))


def read_sr(ds: Dataset) -> SrReading:
    """The references, finding, texts and observers an SR carries (nothing is judged yet)."""
    reading = SrReading()
    for name in EVIDENCE_SEQUENCES:
        _references(ds.get(name), reading, predecessor=name == "PredecessorDocumentsSequence")
    for item in _content(ds.get("ContentSequence")):
        concept = _code(item.get("ConceptNameCodeSequence"))
        kind = str(item.get("ValueType", ""))
        for sop in item.get("ReferencedSOPSequence") or []:
            _reference(sop, reading)
        if concept is None:
            continue
        if kind == "CODE" and concept == RECURRENT_MALIGNANCY:
            value = _code(item.get("ConceptCodeSequence"))
            finding = FINDING_VALUES.get(value[0]) if value is not None and value[1] == "SCT" else None
            if finding is None:
                raise SrAssessmentError(
                    f"Recurrent malignancy (111338, DCM) has the value {value}, not Present (52101004, SCT), "
                    "Absent (272519000, SCT), Undetermined (373068000, SCT) or Indeterminate (82334004, SCT)"
                )
            reading.findings.add(finding)
        elif kind == "TEXT" and concept in (VERDICT_ITEM, REASON_ITEM, COMMENT_ITEM, SEEN_ITEM):
            reading.texts[concept] = str(item.get("TextValue", "")).strip()
        elif kind == "PNAME" and concept == PERSON_OBSERVER_NAME:
            reading.observer_names.append(str(item.get("PersonName", "")).strip())
    return reading


def reader_of(ds: Dataset, reading: SrReading) -> str | None:
    """Who assessed: the verifying observer of a VERIFIED SR, else an author observer, else the content's."""
    if str(ds.get("VerificationFlag", "")).upper() == "VERIFIED":
        for observer in ds.get("VerifyingObserverSequence") or []:
            name = str(observer.get("VerifyingObserverName", "")).strip()
            if name:
                return name
    for author in ds.get("AuthorObserverSequence") or []:
        name = str(author.get("PersonName", "")).strip()
        if name:
            return name
    return next((name for name in reading.observer_names if name), None)


def _aware(moment: dt.datetime, offset: str) -> dt.datetime:
    if moment.tzinfo is not None:
        return moment.astimezone(dt.timezone.utc)
    if offset:
        try:
            zone = DT(f"20000101000000{offset}").tzinfo
        except ValueError:
            zone = None
        if zone is not None:
            return moment.replace(tzinfo=zone).astimezone(dt.timezone.utc)
    return moment.astimezone(dt.timezone.utc)  # naive: the node's local time


def assessed_at(ds: Dataset) -> dt.datetime | None:
    """When the reader assessed: Verification DateTime of a VERIFIED SR, else Content Date and Time."""
    offset = str(ds.get("TimezoneOffsetFromUTC", "") or "").strip()
    try:
        if str(ds.get("VerificationFlag", "")).upper() == "VERIFIED":
            for observer in ds.get("VerifyingObserverSequence") or []:
                value = str(observer.get("VerificationDateTime", "") or "").strip()
                if value:
                    return _aware(DT(value), offset)
        day, clock = str(ds.get("ContentDate", "") or ""), str(ds.get("ContentTime", "") or "")
        if day.strip() and clock.strip():
            return _aware(dt.datetime.combine(DA(day.strip()), TM(clock.strip())), offset)
    except ValueError:
        return None
    return None


@dataclass(frozen=True)
class Judged:
    """An SR's assessment in the vocabulary's terms."""

    verdict: Verdict
    reader_finding: ReaderFinding
    reason: Reason | None
    comment: str | None
    seen_ai_before_report: bool | None


def judge(reading: SrReading, ai_finding: str, result_sr_uid: str) -> Judged:
    """The verdict and finding an SR gives on the result whose SR is `result_sr_uid` (rules: module doc)."""
    if not reading.findings:
        raise SrAssessmentError("no Recurrent malignancy (111338, DCM) item: the reader's finding is not stated")
    if len(reading.findings) > 1:
        values = ", ".join(sorted(f.value for f in reading.findings))
        raise SrAssessmentError(f"conflicting Recurrent malignancy (111338, DCM) values: {values}")
    finding = next(iter(reading.findings))
    try:
        explicit = reading.texts.get(VERDICT_ITEM)
        reason = reading.texts.get(REASON_ITEM)
        seen = reading.texts.get(SEEN_ITEM)
        verdict = parse(Verdict, explicit, "AI_VERDICT") if explicit else None
        judged_reason = parse(Reason, reason, "AI_REASON") if reason else None
        judged_seen = parse_yes_no(seen, "AI_SEEN_FIRST") if seen else None
    except VocabularyError as exc:
        raise SrAssessmentError(str(exc)) from exc
    if verdict is None:
        if AI_FINDING_AS_READER.get(ai_finding) is finding:
            verdict = Verdict.AGREE
        else:
            verdict = Verdict.MODIFIED if result_sr_uid in reading.predecessors else Verdict.DISAGREE
    return Judged(verdict, finding, judged_reason, reading.texts.get(COMMENT_ITEM) or None, judged_seen)


@dataclass(frozen=True)
class _Candidate:
    instance_id: int
    sop_instance_uid: str
    study_uid: str
    path: str
    calling_ae: str | None


def _refuse(session: Session, candidate: _Candidate, reason: str) -> None:
    log.warning("reader SR not recorded", extra={"sop_instance_uid": candidate.sop_instance_uid,
                                                 "study_uid": candidate.study_uid, "reason": reason})
    audit.record(session, "evaluation", "assessment-sr-refused", outcome="error", reason=reason,
                 study_uid=candidate.study_uid, sop_instance_uid=candidate.sop_instance_uid,
                 actor=candidate.calling_ae, instance_id=candidate.instance_id)


def _record(session: Session, candidate: _Candidate, ds: Dataset) -> None:
    """Match one SR to a result and record its assessment, or audit why not (the caller commits)."""
    reading = read_sr(ds)
    results = results_by_sr(session, reading.referenced)
    if not results:
        if not reading.looks_like_assessment:
            audit.record(session, "evaluation", "assessment-sr-ignored", reason="not a reader assessment: it "
                         "references no result of this node and carries no assessment content",
                         study_uid=candidate.study_uid, sop_instance_uid=candidate.sop_instance_uid,
                         actor=candidate.calling_ae, instance_id=candidate.instance_id)
            return
        shown = ", ".join(sorted(reading.referenced_srs)[:3]) or "none"
        raise SrAssessmentError(f"references no result of this node (SRs it references: {shown}): not recorded")
    result: Result = results[0]
    reader = reader_of(ds, reading)
    if reader is None:
        raise SrAssessmentError("names no reader (no Verifying Observer Name of a VERIFIED SR, no Author "
                                "Observer Person Name, no Person Observer Name (121008, DCM) item)")
    judged = judge(reading, result.finding, result.sr_sop_instance_uid or "")
    add_assessment(
        session, result, reader=reader, source=AssessmentSource.DICOM.value, verdict=judged.verdict.value,
        reader_finding=judged.reader_finding.value, reason=judged.reason.value if judged.reason else None,
        comment=judged.comment, seen_ai_before_report=judged.seen_ai_before_report,
        actor=f"dicom:{candidate.calling_ae or 'unknown AE'}", assessed_at=assessed_at(ds),
        sop_instance_uid=candidate.sop_instance_uid, peer=candidate.calling_ae,
    )
    log.info("reader assessment recorded from a DICOM SR",
             extra={"sop_instance_uid": candidate.sop_instance_uid, "study_uid": candidate.study_uid,
                    "result_id": result.id, "verdict": judged.verdict.value})


class AssessmentIntake:
    """Reads the SRs received since it last looked; `serve` runs `read_new_srs` on its scheduler.

    Each SR is decided once: recorded (a ReaderAssessment with its SOP Instance UID), refused or ignored
    (an audit event with it); what is undecided is found by those, so a restart loses nothing. `after_id`
    only bounds the search: instance rows below it were all committed and looked at. It follows the newest
    row id seen SETTLE_SECONDS earlier, since a row with a lower id may commit after one with a higher id.
    """

    def __init__(self) -> None:
        self.after_id = 0
        self._newest_seen: deque[tuple[float, int]] = deque()

    def read_new_srs(self, settings: Settings, sessions: sessionmaker[Session]) -> int:
        """Decide up to BATCH undecided SRs (the rest on the next ticks); returns how many were decided."""
        with sessions() as session:
            newest = int(session.scalar(select(func.max(Instance.id))) or 0)
        self._newest_seen.append((time.monotonic(), newest))
        candidates = self._candidates(sessions)
        for candidate in candidates:
            self._decide(sessions, candidate)
        # Rows past a full batch were not looked at yet: the bound may not pass them.
        reached = candidates[-1].instance_id if len(candidates) == BATCH else newest
        settled = time.monotonic() - SETTLE_SECONDS
        while self._newest_seen and self._newest_seen[0][0] <= settled:
            self.after_id = max(self.after_id, min(self._newest_seen.popleft()[1], reached))
        return len(candidates)

    def _candidates(self, sessions: sessionmaker[Session]) -> list[_Candidate]:
        undecided = (
            ~exists().where(ReaderAssessment.sop_instance_uid == Instance.sop_instance_uid),
            ~exists().where(AuditEvent.category == "evaluation", AuditEvent.action.in_(INTAKE_ACTIONS),
                            AuditEvent.sop_instance_uid == Instance.sop_instance_uid),
            ~exists().where(Result.sr_sop_instance_uid == Instance.sop_instance_uid),  # our own SR, back again
        )
        with sessions() as session:
            rows = session.execute(
                select(Instance.id, Instance.sop_instance_uid, Instance.study_uid, Instance.path,
                       Instance.calling_ae)
                .where(Instance.id > self.after_id, Instance.current.is_(True),
                       Instance.sop_class_uid.startswith(SR_CLASS_PREFIX), *undecided)
                .order_by(Instance.id)
                .limit(BATCH)
            ).all()
        return [_Candidate(*row) for row in rows]

    @staticmethod
    def _decide(sessions: sessionmaker[Session], candidate: _Candidate) -> None:
        """One SR in one transaction: recorded, ignored or refused (with the reason), never half-written."""
        try:
            ds = pydicom.dcmread(candidate.path, stop_before_pixels=True)
        except (OSError, InvalidDicomError, EOFError, ValueError) as exc:
            with transaction(sessions) as session:
                _refuse(session, candidate, f"stored SR unreadable: {type(exc).__name__}: {exc}")
            return
        try:
            with transaction(sessions) as session:
                _record(session, candidate, ds)
        except DuplicateAssessment:
            return  # recorded meanwhile (a re-send raced with this tick): nothing to add
        except IntegrityError:
            log.info("reader SR recorded meanwhile", extra={"sop_instance_uid": candidate.sop_instance_uid})
        except (SrAssessmentError, OutcomeError) as exc:
            with transaction(sessions) as session:
                _refuse(session, candidate, f"reader assessment SR {candidate.sop_instance_uid}: {exc}")
        except Exception as exc:  # one SR's surprise must not stop the others; audited, so not retried forever
            log.exception("reading a reader SR failed", extra={"sop_instance_uid": candidate.sop_instance_uid})
            with transaction(sessions) as session:
                _refuse(session, candidate, f"internal error reading the SR: {type(exc).__name__}: {exc}")
