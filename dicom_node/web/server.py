"""Runs the dashboard (uvicorn) in a thread of the `serve` process.

The socket is bound here, before the thread starts, so that a port already in use stops `serve` at once
with a clear message, and so that port 0 (pick a free port) reports the port actually used.
"""

from __future__ import annotations

import logging
import socket
import threading

import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings
from dicom_node.web.app import create_app

log = logging.getLogger(__name__)


class DashboardError(Exception):
    """The dashboard cannot start (e.g. its port is taken); the message says which setting to change."""


class DashboardServer:
    """A uvicorn server on its own thread; stop() ends it and waits for the thread."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        family = socket.AF_INET6 if ":" in settings.dashboard.bind else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((settings.dashboard.bind, settings.dashboard.port))
        except OSError as exc:
            self._socket.close()
            raise DashboardError(
                f"dashboard cannot listen on {settings.dashboard.bind}:{settings.dashboard.port}: "
                f"{exc.strerror or exc} (change dashboard.port or dashboard.bind)"
            ) from exc
        self._socket.listen(128)
        self.host = settings.dashboard.bind
        self.port = int(self._socket.getsockname()[1])
        config = uvicorn.Config(
            create_app(settings, sessions),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="dashboard", daemon=True)

    def _run(self) -> None:
        self._server.run(sockets=[self._socket])

    def start(self) -> DashboardServer:
        self._thread.start()
        log.info("dashboard listening", extra={"url": f"http://{self.host}:{self.port}/"})
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


def start_dashboard(settings: Settings, sessions: sessionmaker[Session]) -> DashboardServer:
    return DashboardServer(settings, sessions).start()
