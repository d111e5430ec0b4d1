"""The JSON API for scripts and the RIS: the same reads as the pages, and clinical registration."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder

from db import listings, queries
from dicom_node.web import clinical
from dicom_node.web.dependencies import ApiUser, Context, Db, refuse_write
from dicom_node.web.images import result_images
from dicom_node.web.rows import row

router = APIRouter(prefix="/api")

Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("/studies")
def api_studies(
    _user: ApiUser,
    session: Db,
    state: str | None = None,
    q: str | None = None,
    limit: Limit = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[dict[str, Any]]:
    return jsonable_encoder(listings.list_studies(session, state=state, search=q, limit=limit, offset=offset))


@router.get("/studies/{key}")
def api_study(key: str, context: Context, _user: ApiUser, session: Db) -> dict[str, Any]:
    timeline = queries.study_timeline(session, key)
    if timeline is None:
        raise HTTPException(404, f"no study with UID or accession number {key}")
    study_uid = timeline.study.study_uid
    images = {
        r.id: [
            f"/studies/{quote(study_uid)}/images/{i.sop_instance_uid}.png"
            for i in result_images(session, r, study_uid, context.results_dir)
        ]
        for r in timeline.results
    }
    return {
        "study": jsonable_encoder(timeline.study),
        "calling_ae": timeline.calling_ae,
        "generation": timeline.generation,
        "pet_series_uid": timeline.pet_series_uid,
        "ct_series_uid": timeline.ct_series_uid,
        "series": jsonable_encoder(timeline.series),
        "events": [row(e) for e in timeline.events],
        "jobs": [row(j) for j in timeline.jobs],
        "results": [{**row(r), "images": images[r.id]} for r in timeline.results],
        "outbox": [row(o) for o in timeline.outbox],
    }


@router.get("/failures")
def api_failures(_user: ApiUser, session: Db, limit: Limit = 200) -> list[dict[str, Any]]:
    return jsonable_encoder(queries.failures(session, limit=limit))


@router.get("/outbox")
def api_outbox(
    _user: ApiUser, session: Db, state: str | None = None, limit: Limit = 200
) -> list[dict[str, Any]]:
    return [row(o) for o in queries.outbox_items(session, state=state, limit=limit)]


@router.get("/health")
def api_health(context: Context, _user: ApiUser, session: Db) -> dict[str, Any]:
    found = context.problems()
    return {
        "healthy": not found,
        "problems": found,
        "disks": jsonable_encoder(context.disks()),
        **jsonable_encoder(queries.health(session, worker_stale_after=context.stale_after)),
    }


@router.post("/clinical", status_code=201)
def api_clinical(
    request: Request, body: clinical.ClinicalIn, context: Context, user: ApiUser
) -> dict[str, Any]:
    refuse_write(request, context, user, request.headers.get("x-csrf-token"))
    return clinical.register(context, user, source="http", **body.model_dump())
