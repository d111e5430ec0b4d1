"""Machine probes: /healthz (liveness) and /readyz (readiness) for orchestration (no login, any Host) and
/metrics for Prometheus."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dicom_node import readiness
from dicom_node.web.dependencies import Context, identify, require_api_user

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
def healthz(context: Context) -> PlainTextResponse:
    found = context.problems()
    if found:
        log.warning("health check failed", extra={"problems": "; ".join(found)})
        return PlainTextResponse("unhealthy: " + "; ".join(found) + "\n", status_code=503)
    return PlainTextResponse("ok\n")


@router.get("/readyz")
def readyz(context: Context) -> PlainTextResponse:
    """Live, and a study sent now is received and analysed at once (`readiness`): 503 while starting."""
    found = context.problems() + readiness.problems(context.settings, context.sessions)
    if found:
        return PlainTextResponse("not ready: " + "; ".join(found) + "\n", status_code=503)
    return PlainTextResponse("ready\n")


@router.get("/metrics")
def metrics(request: Request, context: Context) -> Response:
    # Identified only when needed: public metrics record no refusal for a stray token.
    if not context.settings.dashboard.public_metrics:
        require_api_user(identify(request, context))
    return Response(generate_latest(context.registry), media_type=CONTENT_TYPE_LATEST)
