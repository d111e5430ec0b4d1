"""The dashboard and HTTP API (FastAPI): server-rendered pages for admins, JSON for scripts and the RIS.

Every page and API route reads through `db.queries`, so the pages, the API and the CLIs agree. The only
writes are audit events (logins, refusals), login sessions, clinical metadata, reader assessments and
reference standards registered by a user or a RIS; anonymous access (loopback only) is read-only. `serve`
runs this app in its own process (`server`).

This module only assembles the application: the shared state (`context.WebContext`, on `app.state.context`),
the protections, the error answers, and the routers in `routes/`.
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import __version__
from dicom_node.config import Settings
from dicom_node.web.context import WebContext
from dicom_node.web.dependencies import LoginRequired, client_address, get_context
from dicom_node.web.rendering import TEMPLATES
from dicom_node.web.routes import api, evaluation, login, outcomes, pages, probes
from dicom_node.web.security import add_protections

STATIC = TEMPLATES.parent / "static"


def to_login(_request: Request, exc: LoginRequired) -> RedirectResponse:
    """A page without a session: to the login form, which comes back to the page afterwards."""
    return RedirectResponse(f"/login?next={quote(exc.path)}", status_code=303)


def _given(value: object) -> str:
    """The offending value when it is a short scalar (a verdict, a date), so the caller sees what was wrong."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool) and len(str(value)) <= 64:
        return f" (got {value!r})"
    return ""


def invalid_input(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each field at fault, recorded as a refusal."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc'] if p != 'body')}: {err['msg']}{_given(err.get('input'))}"
        for err in exc.errors()
    )
    # Validation runs before authentication: counted per source like every unauthenticated refusal.
    get_context(request).refusals.refused(
        "api-refused", client_address(request), f"invalid input: {problems}", path=request.url.path
    )
    return JSONResponse({"detail": f"invalid input: {problems}"}, status_code=422)


def create_app(settings: Settings, sessions: sessionmaker[Session]) -> FastAPI:
    """The dashboard application for one node configuration and database."""
    app = FastAPI(
        title="psma-node",
        version=__version__,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    context = WebContext.build(settings, sessions)
    app.state.context = context
    add_protections(app, settings.dashboard, context.refusals)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.exception_handler(LoginRequired)(to_login)
    app.exception_handler(RequestValidationError)(invalid_input)
    for module in (login, pages, probes, api, outcomes, evaluation):
        app.include_router(module.router)
    return app
