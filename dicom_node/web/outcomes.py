"""Reader assessments and reference standards entered over HTTP (RIS JSON or the study page's forms).

The JSON shapes are an interface scripts rely on (docs/assessments.md); the rules are `db.outcomes`' (which
study, which result, dates) and `dicom_node.evaluation.vocabulary`'s (which words). This module only turns
their refusals into 404 (unknown study or result) or 422 (anything else), logged and audited, in one place
for the API and the pages.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict
from enum import Enum
from typing import Any, NoReturn, TypeVar

from fastapi import HTTPException
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.orm import Session

from db.outcomes import (
    OutcomeError,
    ResultNotFound,
    StudyNotFound,
    StudyRef,
    list_assessments,
    list_reference_standards,
    record_assessment,
    record_reference_standard,
)
from db.session import transaction
from dicom_node.evaluation.vocabulary import (
    FINDING_LABELS,
    METHOD_LABELS,
    REASON_LABELS,
    VERDICT_LABELS,
    ReaderFinding,
    Reason,
    ReferenceMethod,
    Verdict,
    VocabularyError,
)
from dicom_node.web.auth import Principal
from dicom_node.web.context import WebContext

log = logging.getLogger(__name__)

MAX_LISTED = 10000


class _NamesAStudy(BaseModel):
    """A study by accession number or Study Instance UID (both only when they name the same study)."""

    model_config = ConfigDict(extra="forbid")

    accession_number: str | None = Field(default=None, max_length=64)
    study_instance_uid: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _named(self) -> _NamesAStudy:
        if not (self.accession_number or "").strip() and not (self.study_instance_uid or "").strip():
            raise ValueError("name the study: give accession_number or study_instance_uid")
        return self

    def ref(self) -> StudyRef:
        return StudyRef(self.accession_number, self.study_instance_uid)


class AssessmentIn(_NamesAStudy):
    """POST /api/assessments: a reader's verdict on a study's result (its current one unless the SR is named)."""

    sr_sop_instance_uid: str | None = Field(default=None, max_length=64)
    reader: str = Field(min_length=1, max_length=128)
    verdict: Verdict
    reader_finding: ReaderFinding
    reason: Reason | None = None
    comment: str | None = Field(default=None, max_length=4000)
    seen_ai_before_report: bool | None = None


class ReferenceStandardIn(_NamesAStudy):
    """POST /api/reference-standards: what turned out to be true for a study."""

    recurrence: bool
    method: ReferenceMethod
    date: dt.date
    source: str | None = Field(default=None, max_length=128)


def refuse(context: WebContext, user: Principal, action: str, exc: Exception, **fields: Any) -> NoReturn:
    """Log and audit a refused assessment or reference standard, and answer 404 or 422 with the reason."""
    reason = str(exc)
    status = 404 if isinstance(exc, (StudyNotFound, ResultNotFound)) else 422
    log.warning("refused %s", action, extra={"reason": reason, "actor": user.actor})
    context.audit("evaluation", f"{action}-refused", outcome="refused", reason=reason, actor=user.actor, **fields)
    raise HTTPException(status, reason)


def _stored(context: WebContext, user: Principal, action: str, write: Callable[[Session], dict[str, Any]],
            ref: StudyRef) -> dict[str, Any]:
    """Run `write` in one transaction; a refusal writes nothing but its audit event."""
    try:
        with transaction(context.sessions) as session:
            stored = write(session)
    except (OutcomeError, VocabularyError) as exc:
        refuse(context, user, action, exc, accession_number=ref.accession_number,
               study_instance_uid=ref.study_instance_uid)
    log.info("%s recorded", action, extra={"actor": user.actor})
    return stored


def store_assessment(context: WebContext, user: Principal, source: str, body: AssessmentIn) -> dict[str, Any]:
    """Record the assessment as `user`; the stored row as the listing shows it."""

    def write(session: Session) -> dict[str, Any]:
        row = record_assessment(
            session, body.ref(), sr_sop_instance_uid=body.sr_sop_instance_uid, reader=body.reader,
            source=source, verdict=body.verdict.value, reader_finding=body.reader_finding.value,
            reason=body.reason.value if body.reason else None, comment=body.comment,
            seen_ai_before_report=body.seen_ai_before_report, actor=user.actor,
        )
        return asdict(list_assessments(session, assessment_id=row.id)[0])

    return _stored(context, user, "assessment", write, body.ref())


def store_reference_standard(context: WebContext, user: Principal, channel: str,
                             body: ReferenceStandardIn) -> dict[str, Any]:
    """Record the reference standard as `user`; the stored row as the listing shows it."""

    def write(session: Session) -> dict[str, Any]:
        row = record_reference_standard(
            session, body.ref(), recurrence=body.recurrence, method=body.method.value, reference_date=body.date,
            source=body.source, channel=channel, actor=user.actor,
        )
        return asdict(list_reference_standards(session, reference_id=row.id)[0])

    return _stored(context, user, "reference-standard", write, body.ref())


Word = TypeVar("Word", bound=Enum)


def page_values(session: Session, study_uid: str) -> dict[str, Any]:
    """What the study page shows and offers: the recorded history and the forms' choices with their labels."""
    return {
        "assessments": list_assessments(session, study_instance_uid=study_uid),
        "references": list_reference_standards(session, study_instance_uid=study_uid),
        "verdicts": _by_value(VERDICT_LABELS),
        "reader_findings": _by_value(FINDING_LABELS),
        "reasons": _by_value(REASON_LABELS),
        "methods": _by_value(METHOD_LABELS),
    }


def _by_value(labels: Mapping[Word, str]) -> dict[str, str]:
    """Labels keyed by the stored words, as templates look them up."""
    return {member.value: label for member, label in labels.items()}
