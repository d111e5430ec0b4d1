"""Logging in and out of the dashboard: password check behind the throttle, a database-backed session."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from dicom_node.web.auth import COOKIE_NAME
from dicom_node.web.dependencies import Context, PageUser, client_address, refuse_write

router = APIRouter(include_in_schema=False)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site only, so the form cannot redirect elsewhere."""
    return target if target and target.startswith("/") and not target.startswith("//") else "/studies"


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, context: Context, next: str | None = None) -> HTMLResponse:
    return context.templates.TemplateResponse(
        request, "login.html", {"next": safe_next(next), "error": None}
    )


@router.post("/login")
def login(
    request: Request,
    context: Context,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/studies",
) -> Response:
    source = client_address(request) or "unknown"
    wait = context.throttle.admit(username, source)
    if wait > 0:  # not checked, and not counted: the delay does not grow while it runs
        seconds = math.ceil(wait)
        context.refusals.refused(
            "login", source, f"throttled after repeated failures: retry in {seconds} s",
            actor=username[:128],
        )
        return context.templates.TemplateResponse(
            request,
            "login.html",
            {"next": safe_next(next), "error": f"Too many failed log-ins: try again in {seconds} s."},
            status_code=429,
            headers={"Retry-After": str(seconds)},
        )
    principal = context.auth.login(username, password)
    if principal is None:
        context.refusals.refused("login", source, "wrong user name or password", actor=username[:128])
        return context.templates.TemplateResponse(
            request,
            "login.html",
            {"next": safe_next(next), "error": "Wrong user name or password."},
            status_code=401,
        )
    context.throttle.succeeded(username, source)
    session_id = context.logins.open(principal.name, source)
    context.audit("admin", "login", actor=principal.actor, peer=source)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        context.auth.issue_cookie(principal, session_id),
        httponly=True,
        samesite="strict",
        max_age=int(context.settings.dashboard.session_hours * 3600),
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
def logout(request: Request, context: Context, user: PageUser, csrf: Annotated[str, Form()] = "") -> Response:
    refuse_write(request, context, user, csrf)
    if user.session_id is not None:
        context.logins.end(user.session_id)
    context.audit("admin", "logout", actor=user.actor, peer=client_address(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE_NAME)
    return response
