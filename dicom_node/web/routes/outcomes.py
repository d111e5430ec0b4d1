"""Reader assessments and reference standards: the JSON API for the RIS and registries, and the study page's
forms. Writes need a user or a bearer token (and a session's CSRF token), like every write of the dashboard."""

from __future__ import annotations

from typing import Annotated, Any, NoReturn
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from db import queries
from db.outcomes import list_assessments, list_reference_standards
from dicom_node.evaluation.vocabulary import (
    AssessmentSource,
    ReaderFinding,
    Reason,
    ReferenceChannel,
    ReferenceMethod,
    Verdict,
    VocabularyError,
    parse,
    parse_date,
    parse_optional,
    parse_yes_no,
)
from dicom_node.web.auth import Principal
from dicom_node.web.context import WebContext
from dicom_node.web.dependencies import ApiUser, Context, Db, PageUser, refuse_write
from dicom_node.web.outcomes import (
    MAX_LISTED,
    AssessmentIn,
    ReferenceStandardIn,
    refuse,
    store_assessment,
    store_reference_standard,
)

router = APIRouter()

Limit = Annotated[int, Query(ge=1, le=MAX_LISTED)]
SEEN_CHOICES = {"yes": True, "no": False}
"""The form's select values; anything else (the empty choice) means "not said"."""


@router.post("/api/assessments", status_code=201)
def api_record_assessment(request: Request, body: AssessmentIn, context: Context, user: ApiUser) -> dict[str, Any]:
    refuse_write(request, context, user, request.headers.get("x-csrf-token"))
    return jsonable_encoder(store_assessment(context, user, AssessmentSource.API.value, body))


@router.get("/api/assessments")
def api_list_assessments(
    _user: ApiUser, session: Db, accession_number: str | None = None, study_instance_uid: str | None = None,
    limit: Limit = 1000,
) -> list[dict[str, Any]]:
    return jsonable_encoder(list_assessments(
        session, accession_number=accession_number, study_instance_uid=study_instance_uid, limit=limit))


@router.post("/api/reference-standards", status_code=201)
def api_record_reference_standard(
    request: Request, body: ReferenceStandardIn, context: Context, user: ApiUser
) -> dict[str, Any]:
    refuse_write(request, context, user, request.headers.get("x-csrf-token"))
    return jsonable_encoder(store_reference_standard(context, user, ReferenceChannel.API.value, body))


@router.get("/api/reference-standards")
def api_list_reference_standards(
    _user: ApiUser, session: Db, accession_number: str | None = None, study_instance_uid: str | None = None,
    limit: Limit = 1000,
) -> list[dict[str, Any]]:
    return jsonable_encoder(list_reference_standards(
        session, accession_number=accession_number, study_instance_uid=study_instance_uid, limit=limit))


def _study_uid(session: Db, key: str) -> str:
    study = queries.find_study(session, key)
    if study is None:
        raise HTTPException(404, f"no study with UID or accession number {key}")
    return study.study_uid


def _form_refused(context: WebContext, user: Principal, action: str, exc: Exception, study_uid: str) -> NoReturn:
    """A form value the page never offers (a tampered or stale form, an overlong comment): refused like a bad
    API call, with the fields at fault named."""
    if isinstance(exc, ValidationError):
        exc = ValueError("; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()))
    refuse(context, user, action, exc, study_instance_uid=study_uid)


def _back(study_uid: str, anchor: str) -> RedirectResponse:
    return RedirectResponse(f"/studies/{quote(study_uid)}#{anchor}", status_code=303)


@router.post("/studies/{key}/assessments", include_in_schema=False)
def study_assessment(
    request: Request,
    key: str,
    context: Context,
    user: PageUser,
    session: Db,
    csrf: Annotated[str, Form()],
    verdict: Annotated[str, Form()] = "",
    reader_finding: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
    seen_ai_before_report: Annotated[str, Form()] = "",
    sr_sop_instance_uid: Annotated[str, Form()] = "",
) -> Response:
    """The study page's assessment form: the logged-in user is the reader."""
    refuse_write(request, context, user, csrf)
    study_uid = _study_uid(session, key)
    try:
        body = AssessmentIn(
            study_instance_uid=study_uid, sr_sop_instance_uid=sr_sop_instance_uid or None, reader=user.name,
            verdict=parse(Verdict, verdict, "verdict"),
            reader_finding=parse(ReaderFinding, reader_finding, "reader_finding"),
            reason=parse_optional(Reason, reason, "reason"), comment=comment or None,
            seen_ai_before_report=SEEN_CHOICES.get(seen_ai_before_report),
        )
    except (VocabularyError, ValidationError) as exc:
        _form_refused(context, user, "assessment", exc, study_uid)
    store_assessment(context, user, AssessmentSource.DASHBOARD.value, body)
    return _back(study_uid, "assessments")


@router.post("/studies/{key}/reference-standards", include_in_schema=False)
def study_reference_standard(
    request: Request,
    key: str,
    context: Context,
    user: PageUser,
    session: Db,
    csrf: Annotated[str, Form()],
    recurrence: Annotated[str, Form()] = "",
    method: Annotated[str, Form()] = "",
    date: Annotated[str, Form()] = "",
    source: Annotated[str, Form()] = "",
) -> Response:
    """The study page's reference-standard form (date as the browser's date picker sends it, YYYY-MM-DD)."""
    refuse_write(request, context, user, csrf)
    study_uid = _study_uid(session, key)
    try:
        body = ReferenceStandardIn(
            study_instance_uid=study_uid, recurrence=parse_yes_no(recurrence, "recurrence"),
            method=parse(ReferenceMethod, method, "method"), date=parse_date(date, "date"), source=source or None,
        )
    except (VocabularyError, ValidationError) as exc:
        _form_refused(context, user, "reference-standard", exc, study_uid)
    store_reference_standard(context, user, ReferenceChannel.DASHBOARD.value, body)
    return _back(study_uid, "reference-standard")
