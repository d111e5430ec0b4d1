"""The dashboard's one way for a route to get shared state: small `Depends` functions over `WebContext`.

Who is calling is decided here and only here (bearer token, else session cookie, else anonymous when
allowed); pages send a stranger to the login form, the API answers 401.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from dicom_node.web.auth import COOKIE_NAME, Principal
from dicom_node.web.context import WebContext


class LoginRequired(Exception):
    """A page was asked for without a session: the browser is sent to the login form."""

    def __init__(self, path: str) -> None:
        self.path = path


def client_address(request: Request) -> str | None:
    """The TCP peer (never a forwarded header: see `server`), which throttling and refusals key on."""
    return request.client.host if request.client else None


def get_context(request: Request) -> WebContext:
    """The context `create_app` put on the application."""
    context: WebContext = request.app.state.context
    return context


Context = Annotated[WebContext, Depends(get_context)]


def open_session(context: Context) -> Iterator[Session]:
    """A read session for the request, closed when the response is sent."""
    with context.sessions() as session:
        yield session


Db = Annotated[Session, Depends(open_session)]


def identify(request: Request, context: Context) -> Principal | None:
    """The caller: bearer token, else session cookie, else anonymous when allowed."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        principal = context.auth.token(header[7:].strip())
        if principal is None:
            context.refusals.refused(
                "api-refused", client_address(request), "invalid bearer token", path=request.url.path
            )
        return principal
    principal = context.auth.read_cookie(request.cookies.get(COOKIE_NAME))
    if principal is not None and not context.logins.is_open(principal.session_id or "", principal.name):
        principal = None  # logged out (or the session expired): the cookie opens nothing any more
    if principal is None and context.auth.allow_anonymous:
        principal = Principal("anonymous", "anonymous")
    return principal


Caller = Annotated[Principal | None, Depends(identify)]


def page_user(request: Request, caller: Caller) -> Principal:
    """The caller of a page; without one the browser goes to the login form and comes back here."""
    if caller is None:
        raise LoginRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return caller


def require_api_user(caller: Principal | None) -> Principal:
    """The caller of an API route, or 401 with the ways to authenticate."""
    if caller is None:
        raise HTTPException(
            401,
            "authentication required: a bearer token or a dashboard login",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return caller


def api_user(caller: Caller) -> Principal:
    """`require_api_user` as a dependency."""
    return require_api_user(caller)


PageUser = Annotated[Principal, Depends(page_user)]
ApiUser = Annotated[Principal, Depends(api_user)]


def refuse_write(request: Request, context: WebContext, user: Principal, csrf: str | None) -> None:
    """Writes need a user or a token (anonymous access is read-only), and a session needs its CSRF token.

    A bearer token is never sent by a browser on its own, so token calls need no CSRF token; a session
    cookie is, so a write with one must echo the session's token (form field or X-CSRF-Token header).
    Called at the top of each write route, after its input is parsed, so bad input is reported first."""
    if user.kind == "anonymous":
        reason = "anonymous access is read-only: log in or use a bearer token"
    elif user.kind == "user" and not context.auth.check_csrf(request.cookies.get(COOKIE_NAME), csrf):
        reason = (
            "missing or wrong CSRF token: reload the page (API calls with a session: X-CSRF-Token header)"
        )
    else:
        return
    context.refusals.refused(
        "api-refused", client_address(request), reason, path=request.url.path, actor=user.actor
    )
    raise HTTPException(403, reason)
