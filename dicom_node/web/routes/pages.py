"""Server-rendered pages for admins: studies, one study (with its result images and the clinical form),
failures, outbox and health. All reads go through `db.queries` and `db.listings`, like the API and the CLI."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from db import listings, queries
from db.models import OutboxState, StudyState
from dicom_node.web import clinical, outcomes
from dicom_node.web.dependencies import Context, Db, PageUser, refuse_write
from dicom_node.web.images import render_png, result_images

router = APIRouter(include_in_schema=False)

PROSTATECTOMY_CHOICES = {"yes": True, "no": False}
"""The form's select values; anything else (the empty choice) means "not given"."""


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/studies", status_code=303)


@router.get("/studies", response_class=HTMLResponse)
def studies_page(
    request: Request,
    context: Context,
    user: PageUser,
    session: Db,
    state: str | None = None,
    q: str | None = None,
) -> HTMLResponse:
    rows = listings.list_studies(session, state=state or None, search=q or None)
    return context.render(
        request,
        "studies.html",
        user,
        studies=rows,
        state=state or "",
        q=q or "",
        states=[s.value for s in StudyState],
        counts=queries.studies_by_state(session),
    )


@router.get("/studies/{key}", response_class=HTMLResponse)
def study_page(request: Request, key: str, context: Context, user: PageUser, session: Db) -> HTMLResponse:
    timeline = queries.study_timeline(session, key)
    if timeline is None:
        return context.render(request, "not_found.html", user, what=f"study {key}")
    study_uid = timeline.study.study_uid
    images = {r.id: result_images(session, r, study_uid, context.results_dir) for r in timeline.results}
    return context.render(request, "study.html", user, t=timeline, images=images,
                          **outcomes.page_values(session, study_uid))


@router.post("/studies/{key}/clinical")
def study_clinical(
    request: Request,
    key: str,
    context: Context,
    user: PageUser,
    session: Db,
    csrf: Annotated[str, Form()],
    psa_ng_ml: Annotated[str, Form()] = "",
    prostatectomy: Annotated[str, Form()] = "",
) -> Response:
    """The study page's form: PSA with a decimal comma or point; the rules are `db.clinical`'s."""
    refuse_write(request, context, user, csrf)
    study = queries.find_study(session, key)
    if study is None or not study.accession_number:
        raise HTTPException(404, "no study with an accession number under this key")
    try:
        psa = float(psa_ng_ml.replace(",", ".")) if psa_ng_ml.strip() else None
    except ValueError:
        # What was typed stays out of the log: it is free text, and could be anything.
        clinical.refuse(context, user, "invalid input: psa_ng_ml: not a number", study_uid=study.study_uid)
    clinical.register(
        context,
        user,
        source="dashboard",
        accession_number=study.accession_number,
        patient_id=study.patient_id,
        psa_ng_ml=psa,
        prostatectomy=PROSTATECTOMY_CHOICES.get(prostatectomy),
    )
    return RedirectResponse(f"/studies/{quote(study.study_uid)}", status_code=303)


@router.get("/studies/{key}/images/{sop_uid}.png")
def study_image(
    key: str, sop_uid: str, context: Context, _user: PageUser, session: Db, frame: int = 0
) -> Response:
    timeline = queries.study_timeline(session, key)
    if timeline is not None:
        for result in timeline.results:
            for image in result_images(session, result, timeline.study.study_uid, context.results_dir):
                if image.sop_instance_uid == sop_uid:
                    return Response(
                        render_png(image.path, frame),
                        media_type="image/png",
                        headers={"Cache-Control": "private, max-age=300"},
                    )
    raise HTTPException(404, "no such result image")


@router.get("/failures", response_class=HTMLResponse)
def failures_page(request: Request, context: Context, user: PageUser, session: Db) -> HTMLResponse:
    return context.render(request, "failures.html", user, failures=queries.failures(session))


@router.get("/outbox", response_class=HTMLResponse)
def outbox_page(
    request: Request, context: Context, user: PageUser, session: Db, state: str | None = None
) -> HTMLResponse:
    return context.render(
        request,
        "outbox.html",
        user,
        items=queries.outbox_items(session, state=state or None),
        state=state or "",
        states=[s.value for s in OutboxState],
    )


@router.get("/health", response_class=HTMLResponse)
def health_page(request: Request, context: Context, user: PageUser, session: Db) -> HTMLResponse:
    return context.render(
        request,
        "health.html",
        user,
        h=queries.health(session, worker_stale_after=context.stale_after),
        problems=context.problems(),
        disks=context.disks(),
    )
