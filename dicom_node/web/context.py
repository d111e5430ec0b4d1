"""Everything the dashboard's routes share, built once by `create_app` and kept on `app.state.context`.

One typed object instead of closure variables, so a route gets what it needs through a `Depends` function
(`dependencies`) and can live in any router module.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from prometheus_client import CollectorRegistry
from sqlalchemy.orm import Session, sessionmaker

from db.audit import record
from db.monitoring import open_alarms
from db.session import transaction
from dicom_node.config import Settings
from dicom_node.metrics import make_registry, worker_stale_seconds
from dicom_node.web import health as health_checks
from dicom_node.web.auth import COOKIE_NAME, Authenticator, Principal
from dicom_node.web.refusals import RefusalLog
from dicom_node.web.rendering import make_templates
from dicom_node.web.sessions import LoginSessions
from dicom_node.web.throttle import LoginThrottle


def write_audit(sessions: sessionmaker[Session], category: str, action: str, **fields: Any) -> None:
    """One audit event in its own transaction (for actions that write nothing else)."""
    with transaction(sessions) as session:
        record(session, category, action, **fields)


@dataclass
class WebContext:
    """Settings, database sessions, who may log in, who was refused, and how pages are rendered."""

    settings: Settings
    sessions: sessionmaker[Session]
    auth: Authenticator
    logins: LoginSessions
    throttle: LoginThrottle
    refusals: RefusalLog
    templates: Jinja2Templates
    registry: CollectorRegistry
    results_dir: Path
    stale_after: dt.timedelta

    @classmethod
    def build(cls, settings: Settings, sessions: sessionmaker[Session]) -> WebContext:
        """The context for one node configuration and database."""
        return cls(
            settings=settings,
            sessions=sessions,
            auth=Authenticator(settings.dashboard),
            logins=LoginSessions(sessions, settings.dashboard.session_hours),
            throttle=LoginThrottle(),
            refusals=RefusalLog(partial(write_audit, sessions)),
            templates=make_templates(settings),
            registry=make_registry(settings, sessions),
            results_dir=Path(settings.storage.results_directory),
            stale_after=dt.timedelta(seconds=worker_stale_seconds(settings)),
        )

    def audit(self, category: str, action: str, **fields: Any) -> None:
        """One audit event in its own transaction (for actions that write nothing else)."""
        write_audit(self.sessions, category, action, **fields)

    def render(self, request: Request, name: str, user: Principal, **values: Any) -> HTMLResponse:
        """A page for `user`, with the CSRF token its forms must echo back and the open monitoring alarms
        (every page shows them in a banner)."""
        cookie = request.cookies.get(COOKIE_NAME) or "anonymous"
        with self.sessions() as session:
            alarms = open_alarms(session)
        return self.templates.TemplateResponse(
            request, name, {"user": user, "csrf": self.auth.csrf_token(cookie), "alarms": alarms, **values}
        )

    def problems(self) -> list[str]:
        """Why the node cannot do its job right now (empty when healthy)."""
        return health_checks.problems(self.settings, self.sessions)

    def disks(self) -> list[health_checks.DiskUsage]:
        """Free space where received instances and results are written."""
        storage = self.settings.storage
        found = [health_checks.disk_usage(Path(p)) for p in (storage.directory, storage.results_directory)]
        return [d for d in found if d is not None]

    def close(self) -> None:
        """Write the summaries of refusals still being counted (at shutdown)."""
        self.refusals.close()
