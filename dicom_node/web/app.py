"""The dashboard and HTTP API (FastAPI): server-rendered pages for admins, JSON for scripts and the RIS.

Every page and API route reads through `db.queries`, so the pages, the API and the CLIs agree. The only
writes are audit events (logins, refusals), login sessions, and clinical metadata registered by a user or a
RIS; anonymous access (loopback only) is read-only. `serve` runs this app in its own process (`server`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from db import queries
from db.audit import record
from db.clinical import register_clinical_info
from db.models import OutboxState, StudyState
from db.session import transaction
from dicom_node import __version__
from dicom_node.config import Settings
from dicom_node.metrics import make_registry, worker_stale_seconds
from dicom_node.web import health as health_checks
from dicom_node.web.auth import COOKIE_NAME, Authenticator, Principal
from dicom_node.web.images import render_png, result_images
from dicom_node.web.refusals import RefusalLog
from dicom_node.web.security import add_protections
from dicom_node.web.sessions import LoginSessions
from dicom_node.web.throttle import LoginThrottle

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
DISCLAIMER = "Research software: results are NOT FOR DIAGNOSTIC USE."


class LoginRequired(Exception):
    """A page was asked for without a session: the browser is sent to the login form."""

    def __init__(self, path: str) -> None:
        self.path = path


class ClinicalIn(BaseModel):
    """Clinical metadata a RIS registers for an accession before (or after) the study arrives."""

    model_config = ConfigDict(extra="forbid")

    accession_number: str = Field(min_length=1, max_length=64)
    patient_id: str | None = Field(default=None, max_length=64)
    psa_ng_ml: float | None = Field(default=None, ge=0, le=100000)
    prostatectomy: bool | None = None


def _when(value: dt.datetime | None) -> str:
    value = queries.as_utc(value)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def _size(value: int | float | None) -> str:
    amount = float(value or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if amount < 1024 or unit == "TB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return ""


def _kind(sop_class_uid: str | None) -> str:
    """What a result object is, from its SOP class: structured report, segmentation or secondary capture."""
    uid = sop_class_uid or ""
    if uid.startswith("1.2.840.10008.5.1.4.1.1.88."):
        return "SR"
    if uid == "1.2.840.10008.5.1.4.1.1.66.4":
        return "SEG"
    return "SC" if uid in queries.SECONDARY_CAPTURE_CLASSES else uid


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f} %"


def row(obj: Any) -> dict[str, Any]:
    """An ORM row as plain data (timestamps in UTC ISO format)."""
    data = {}
    for column in obj.__table__.columns:
        value = getattr(obj, column.key)
        data[column.key] = queries.as_utc(value).isoformat() if isinstance(value, dt.datetime) else value
    return data


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


@dataclass
class NodeWeb:
    """What the routes share: settings, database sessions, who may log in and who was refused."""

    settings: Settings
    sessions: sessionmaker[Session]
    auth: Authenticator

    def __post_init__(self) -> None:
        self.logins = LoginSessions(self.sessions, self.settings.dashboard.session_hours)
        self.throttle = LoginThrottle()
        self.refusals = RefusalLog(self.audit)

    def audit(self, category: str, action: str, **fields: Any) -> None:
        with transaction(self.sessions) as session:
            record(session, category, action, **fields)

    def close(self) -> None:
        """Write the summaries of refusals still being counted (at shutdown)."""
        self.refusals.close()


def _web(request: Request) -> NodeWeb:
    return request.app.state.node  # type: ignore[no-any-return]


def db(request: Request) -> Iterator[Session]:
    with _web(request).sessions() as session:
        yield session


def identify(request: Request) -> Principal | None:
    """The caller: bearer token, else session cookie, else anonymous when allowed."""
    web = _web(request)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        principal = web.auth.token(header[7:].strip())
        if principal is None:
            web.refusals.refused(
                "api-refused", _client(request), "invalid bearer token", path=request.url.path
            )
        return principal
    principal = web.auth.read_cookie(request.cookies.get(COOKIE_NAME))
    if principal is not None and not web.logins.is_open(principal.session_id or "", principal.name):
        principal = None  # logged out (or the session expired): the cookie opens nothing any more
    if principal is None and web.auth.allow_anonymous:
        principal = Principal("anonymous", "anonymous")
    return principal


def page_user(request: Request) -> Principal:
    principal = identify(request)
    if principal is None:
        raise LoginRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return principal


def api_user(request: Request) -> Principal:
    principal = identify(request)
    if principal is None:
        raise HTTPException(
            401,
            "authentication required: a bearer token or a dashboard login",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return principal


def refuse_write(request: Request, user: Principal, csrf: str | None) -> None:
    """Writes need a user or a token (anonymous access is read-only), and a session needs its CSRF token.

    A bearer token is never sent by a browser on its own, so token calls need no CSRF token; a session
    cookie is, so a write with one must echo the session's token (form field or X-CSRF-Token header)."""
    web = _web(request)
    if user.kind == "anonymous":
        reason = "anonymous access is read-only: log in or use a bearer token"
    elif user.kind == "user" and not web.auth.check_csrf(request.cookies.get(COOKIE_NAME), csrf):
        reason = (
            "missing or wrong CSRF token: reload the page (API calls with a session: X-CSRF-Token header)"
        )
    else:
        return
    web.refusals.refused("api-refused", _client(request), reason, path=request.url.path, actor=user.actor)
    raise HTTPException(403, reason)


PageUser = Annotated[Principal, Depends(page_user)]
ApiUser = Annotated[Principal, Depends(api_user)]
Db = Annotated[Session, Depends(db)]


def create_app(settings: Settings, sessions: sessionmaker[Session]) -> FastAPI:
    """The dashboard application for one node configuration and database."""
    app = FastAPI(
        title="psma-node",
        version=__version__,
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/api/openapi.json",
    )
    auth = Authenticator(settings.dashboard)
    web = NodeWeb(settings, sessions, auth)
    app.state.node = web
    audit = web.audit
    add_protections(app, settings.dashboard, web.refusals)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters.update(when=_when, size=_size, percent=_percent, kind=_kind)
    templates.env.globals.update(disclaimer=DISCLAIMER, version=__version__, ae_title=settings.node.ae_title)
    registry = make_registry(settings, sessions)
    results_dir = Path(settings.storage.results_directory)
    stale_after = dt.timedelta(seconds=worker_stale_seconds(settings))
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def render(request: Request, name: str, user: Principal, **context: Any) -> HTMLResponse:
        cookie = request.cookies.get(COOKIE_NAME) or "anonymous"
        return templates.TemplateResponse(
            request, name, {"user": user, "csrf": auth.csrf_token(cookie), **context}
        )

    @app.exception_handler(LoginRequired)
    def _to_login(_request: Request, exc: LoginRequired) -> RedirectResponse:
        return RedirectResponse(f"/login?next={quote(exc.path)}", status_code=303)

    @app.exception_handler(RequestValidationError)
    def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'] if p != 'body')}: {err['msg']}" for err in exc.errors()
        )
        # Validation runs before authentication: counted per source like every unauthenticated refusal.
        web.refusals.refused(
            "api-refused", _client(request), f"invalid input: {problems}", path=request.url.path
        )
        return JSONResponse({"detail": f"invalid input: {problems}"}, status_code=422)

    # --- login ---------------------------------------------------------------------------------------

    def _safe_next(target: str | None) -> str:
        return target if target and target.startswith("/") and not target.startswith("//") else "/studies"

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_form(request: Request, next: str | None = None) -> HTMLResponse:
        return templates.TemplateResponse(request, "login.html", {"next": _safe_next(next), "error": None})

    @app.post("/login", include_in_schema=False)
    def login(
        request: Request,
        username: Annotated[str, Form()],
        password: Annotated[str, Form()],
        next: Annotated[str, Form()] = "/studies",
    ) -> Response:
        source = _client(request) or "unknown"
        wait = web.throttle.admit(username, source)
        if wait > 0:  # not checked, and not counted: the delay does not grow while it runs
            seconds = math.ceil(wait)
            web.refusals.refused(
                "login", source, f"throttled after repeated failures: retry in {seconds} s",
                actor=username[:128],
            )
            return templates.TemplateResponse(
                request,
                "login.html",
                {"next": _safe_next(next), "error": f"Too many failed log-ins: try again in {seconds} s."},
                status_code=429,
                headers={"Retry-After": str(seconds)},
            )
        principal = auth.login(username, password)
        if principal is None:
            web.refusals.refused("login", source, "wrong user name or password", actor=username[:128])
            return templates.TemplateResponse(
                request,
                "login.html",
                {"next": _safe_next(next), "error": "Wrong user name or password."},
                status_code=401,
            )
        web.throttle.succeeded(username, source)
        session_id = web.logins.open(principal.name, source)
        audit("admin", "login", actor=principal.actor, peer=source)
        response = RedirectResponse(_safe_next(next), status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            auth.issue_cookie(principal, session_id),
            httponly=True,
            samesite="strict",
            max_age=int(settings.dashboard.session_hours * 3600),
            secure=request.url.scheme == "https",
        )
        return response

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request, user: PageUser, csrf: Annotated[str, Form()] = "") -> Response:
        refuse_write(request, user, csrf)
        if user.session_id is not None:
            web.logins.end(user.session_id)
        audit("admin", "logout", actor=user.actor, peer=_client(request))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE_NAME)
        return response

    # --- pages ---------------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/studies", status_code=303)

    @app.get("/studies", response_class=HTMLResponse, include_in_schema=False)
    def studies_page(
        request: Request, user: PageUser, session: Db, state: str | None = None, q: str | None = None
    ) -> HTMLResponse:
        rows = queries.list_studies(session, state=state or None, search=q or None)
        return render(
            request,
            "studies.html",
            user,
            studies=rows,
            state=state or "",
            q=q or "",
            states=[s.value for s in StudyState],
            counts=queries.studies_by_state(session),
        )

    @app.get("/studies/{key}", response_class=HTMLResponse, include_in_schema=False)
    def study_page(request: Request, key: str, user: PageUser, session: Db) -> HTMLResponse:
        timeline = queries.study_timeline(session, key)
        if timeline is None:
            return render(request, "not_found.html", user, what=f"study {key}")
        images = {
            r.id: result_images(session, r, timeline.study.study_uid, results_dir) for r in timeline.results
        }
        return render(request, "study.html", user, t=timeline, images=images)

    @app.post("/studies/{key}/clinical", include_in_schema=False)
    def study_clinical(
        request: Request,
        key: str,
        user: PageUser,
        session: Db,
        csrf: Annotated[str, Form()],
        psa_ng_ml: Annotated[str, Form()] = "",
        prostatectomy: Annotated[str, Form()] = "",
    ) -> Response:
        refuse_write(request, user, csrf)
        study = queries.find_study(session, key)
        if study is None or not study.accession_number:
            raise HTTPException(404, "no study with an accession number under this key")
        try:
            psa = float(psa_ng_ml.replace(",", ".")) if psa_ng_ml.strip() else None
            clinical = ClinicalIn(
                accession_number=study.accession_number,
                patient_id=study.patient_id,
                psa_ng_ml=psa,
                prostatectomy={"yes": True, "no": False}.get(prostatectomy),
            )
        except ValueError as exc:
            audit(
                "admin",
                "clinical-refused",
                outcome="refused",
                reason=f"invalid input: {exc}",
                actor=user.actor,
                study_uid=study.study_uid,
            )
            raise HTTPException(422, f"invalid clinical values: {exc}") from exc
        _refuse_empty(clinical, user)
        _register(clinical, user, source="dashboard")
        return RedirectResponse(f"/studies/{quote(study.study_uid)}", status_code=303)

    @app.get("/studies/{key}/images/{sop_uid}.png", include_in_schema=False)
    def study_image(key: str, sop_uid: str, _user: PageUser, session: Db, frame: int = 0) -> Response:
        timeline = queries.study_timeline(session, key)
        if timeline is not None:
            for result in timeline.results:
                for image in result_images(session, result, timeline.study.study_uid, results_dir):
                    if image.sop_instance_uid == sop_uid:
                        return Response(
                            render_png(image.path, frame),
                            media_type="image/png",
                            headers={"Cache-Control": "private, max-age=300"},
                        )
        raise HTTPException(404, "no such result image")

    @app.get("/failures", response_class=HTMLResponse, include_in_schema=False)
    def failures_page(request: Request, user: PageUser, session: Db) -> HTMLResponse:
        return render(request, "failures.html", user, failures=queries.failures(session))

    @app.get("/outbox", response_class=HTMLResponse, include_in_schema=False)
    def outbox_page(request: Request, user: PageUser, session: Db, state: str | None = None) -> HTMLResponse:
        return render(
            request,
            "outbox.html",
            user,
            items=queries.outbox_items(session, state=state or None),
            state=state or "",
            states=[s.value for s in OutboxState],
        )

    @app.get("/health", response_class=HTMLResponse, include_in_schema=False)
    def health_page(request: Request, user: PageUser, session: Db) -> HTMLResponse:
        return render(
            request,
            "health.html",
            user,
            h=queries.health(session, worker_stale_after=stale_after),
            problems=health_checks.problems(settings, sessions),
            disks=_disks(),
        )

    def _disks() -> list[health_checks.DiskUsage]:
        found = [
            health_checks.disk_usage(Path(p))
            for p in (settings.storage.directory, settings.storage.results_directory)
        ]
        return [d for d in found if d is not None]

    # --- probes --------------------------------------------------------------------------------------

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        found = health_checks.problems(settings, sessions)
        if found:
            log.warning("health check failed", extra={"problems": "; ".join(found)})
            return PlainTextResponse("unhealthy: " + "; ".join(found) + "\n", status_code=503)
        return PlainTextResponse("ok\n")

    @app.get("/metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if not settings.dashboard.public_metrics:
            api_user(request)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    # --- JSON API ------------------------------------------------------------------------------------

    @app.get("/api/studies")
    def api_studies(
        _user: ApiUser,
        session: Db,
        state: str | None = None,
        q: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[dict[str, Any]]:
        return jsonable_encoder(
            queries.list_studies(session, state=state, search=q, limit=limit, offset=offset)
        )

    @app.get("/api/studies/{key}")
    def api_study(key: str, _user: ApiUser, session: Db) -> dict[str, Any]:
        timeline = queries.study_timeline(session, key)
        if timeline is None:
            raise HTTPException(404, f"no study with UID or accession number {key}")
        images = {
            r.id: [
                f"/studies/{quote(timeline.study.study_uid)}/images/{i.sop_instance_uid}.png"
                for i in result_images(session, r, timeline.study.study_uid, results_dir)
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

    @app.get("/api/failures")
    def api_failures(
        _user: ApiUser, session: Db, limit: Annotated[int, Query(ge=1, le=1000)] = 200
    ) -> list[dict[str, Any]]:
        return jsonable_encoder(queries.failures(session, limit=limit))

    @app.get("/api/outbox")
    def api_outbox(
        _user: ApiUser,
        session: Db,
        state: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    ) -> list[dict[str, Any]]:
        return [row(o) for o in queries.outbox_items(session, state=state, limit=limit)]

    @app.get("/api/health")
    def api_health(_user: ApiUser, session: Db) -> dict[str, Any]:
        found = health_checks.problems(settings, sessions)
        return {
            "healthy": not found,
            "problems": found,
            "disks": jsonable_encoder(_disks()),
            **jsonable_encoder(queries.health(session, worker_stale_after=stale_after)),
        }

    def _register(clinical: ClinicalIn, user: Principal, source: str) -> dict[str, Any]:
        with transaction(sessions) as session:
            info = register_clinical_info(
                session,
                accession_number=clinical.accession_number,
                patient_id=clinical.patient_id,
                psa_ng_ml=clinical.psa_ng_ml,
                prostatectomy=clinical.prostatectomy,
                source=source,
                actor=user.actor,
            )
            session.flush()
            stored = row(info)
        log.info("clinical metadata registered", extra={"source": source, "actor": user.actor})
        return stored

    def _refuse_empty(clinical: ClinicalIn, user: Principal) -> None:
        if clinical.psa_ng_ml is None and clinical.prostatectomy is None:
            log.warning("refused clinical registration: no values", extra={"actor": user.actor})
            audit(
                "admin",
                "clinical-refused",
                outcome="refused",
                actor=user.actor,
                reason="neither psa_ng_ml nor prostatectomy given",
                accession_number=clinical.accession_number,
            )
            raise HTTPException(422, "give psa_ng_ml, prostatectomy or both")

    @app.post("/api/clinical", status_code=201)
    def api_clinical(request: Request, clinical: ClinicalIn, user: ApiUser) -> dict[str, Any]:
        refuse_write(request, user, request.headers.get("x-csrf-token"))
        _refuse_empty(clinical, user)
        return _register(clinical, user, source="http")

    return app
