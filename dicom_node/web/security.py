"""What every dashboard response gets: a Host header check against DNS rebinding, and headers that keep
pages with patient data out of frames, caches and other sites' scripts.

DNS rebinding works by pointing a name the attacker controls at the dashboard's address, so that a page
the admin visits may read the dashboard "same-origin"; the browser then sends the attacker's name as Host.
Accepting only IP addresses, localhost, this machine's name and the configured `dashboard.allowed_hosts`
defeats it (an IP address cannot be rebound).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse

from dicom_node.config import DashboardSettings
from dicom_node.web.refusals import RefusalLog

UNCHECKED_PATHS = {"/healthz", "/readyz"}
"""Probes answer whatever name an orchestrator uses; they say only ok / not ok."""
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SWAGGER_PATHS = {"/api/docs", "/api/docs/oauth2-redirect"}
"""FastAPI's API explorer loads its scripts from a CDN; it shows no patient data, so it keeps framing
protection but not the strict policy."""


def accepted_names(settings: DashboardSettings) -> set[str]:
    names = {"localhost", socket.gethostname().lower()}
    names.update(name.lower() for name in settings.allowed_hosts)
    if settings.bind not in ("0.0.0.0", "::"):
        names.add(settings.bind.lower())
    return names


def host_name(header: str) -> str:
    """The name in a Host header, without port and IPv6 brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def is_accepted_host(header: str, names: set[str]) -> bool:
    name = host_name(header)
    if not name:
        return False
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return name in names


def add_protections(app: FastAPI, settings: DashboardSettings, refusals: RefusalLog) -> None:
    """Install the Host check and the response headers on `app`."""
    names = accepted_names(settings)

    @app.middleware("http")
    async def protect(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        host = request.headers.get("host", "")
        if request.url.path not in UNCHECKED_PATHS and not is_accepted_host(host, names):
            peer = request.client.host if request.client else None
            refusals.refused(
                "host-refused", peer, f"Host header {host[:100]!r} is not a name of this dashboard",
                path=request.url.path,
            )
            response: Response = PlainTextResponse(
                f"Host {host[:100]!r} is not a name of this dashboard: "
                "add it to dashboard.allowed_hosts, or use the IP address\n",
                status_code=400,
            )
        else:
            response = await call_next(request)
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        if request.url.path not in SWAGGER_PATHS:
            response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response
