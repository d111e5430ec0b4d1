"""Runs the dashboard (uvicorn) in its own process, started, watched and stopped by `serve`.

A separate process keeps the dashboard's work off the receiver's interpreter: password hashing during a
login flood, page rendering and PNG encoding never hold the GIL the DICOM listener needs. The dashboard
reads everything from the database, so it needs nothing from the receiving process but the settings.

The socket is bound here, in `serve`, before the process starts, so that a port already in use stops
`serve` at once with a clear message, and so that port 0 (pick a free port) reports the port actually used;
the process inherits the listening socket.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from multiprocessing.synchronize import Event

from dicom_node.config import Settings
from dicom_node.log import configure_logging

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 30.0
"""How long `serve` waits for a new dashboard process to be ready before it goes on without it."""
RESTART_DELAY_S = 5.0
"""Wait before restarting a dashboard process that died, so a crash loop does not spin."""
NICENESS = 5
"""The dashboard yields the CPU to receiving and analysis when both want it."""


class DashboardError(Exception):
    """The dashboard cannot start (e.g. its port is taken); the message says which setting to change."""


def dashboard_main(settings: Settings, listener: socket.socket, parent_pid: int, ready: Event) -> None:
    """Entry point of the dashboard process: serve the app on the inherited socket until SIGTERM."""
    import uvicorn

    from db.session import make_engine, make_session_factory
    from dicom_node.web.app import create_app

    configure_logging(settings.logging)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; `serve` stops us.
    os.nice(NICENESS)
    engine = make_engine(settings.database.url.get_secret_value())
    app = create_app(settings, make_session_factory(engine))
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="off", timeout_graceful_shutdown=5,
            # X-Forwarded-For from loopback would let any local process pick its source address and so
            # step around the per-source login throttling: the TCP peer is the source.
            proxy_headers=False,
        )
    )

    def housekeeping() -> None:
        """Summarise finished refusal windows; exit if `serve` is gone (killed without stopping us)."""
        while not server.should_exit:
            try:
                app.state.context.refusals.flush_due()
            except Exception:  # the database may be away for a while: say so, keep serving
                log.exception("could not record refusal summaries")
            if os.getppid() != parent_pid:
                log.warning("serve process gone: dashboard exits")
                server.should_exit = True
            time.sleep(1.0)

    threading.Thread(target=housekeeping, name="housekeeping", daemon=True).start()
    # uvicorn handles SIGTERM itself, then re-raises it to the handler found before it started: with the
    # default one the process would die before summarising its refusal counts below.
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "should_exit", True))
    log.info("dashboard process serving", extra={"pid": os.getpid()})
    ready.set()  # connections already wait in the socket's backlog; run() accepts them at once
    try:
        server.run(sockets=[listener])
    finally:
        app.state.context.close()
        engine.dispose()


class DashboardProcess:
    """The dashboard's listening socket and the process serving it; restarted if it dies."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        dashboard = settings.dashboard
        family = socket.AF_INET6 if ":" in dashboard.bind else socket.AF_INET
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP, and
        # without it Nagle plus delayed ACK add ~40 ms to every request after a connection's first.
        self._socket = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((dashboard.bind, dashboard.port))
        except OSError as exc:
            self._socket.close()
            raise DashboardError(
                f"dashboard.port {dashboard.port} on {dashboard.bind}: cannot listen: {exc.strerror or exc} "
                "(change dashboard.port or dashboard.bind)"
            ) from exc
        self._socket.listen(128)
        self.host = dashboard.bind
        self.port = int(self._socket.getsockname()[1])
        self._context = multiprocessing.get_context("spawn")
        self._process: BaseProcess | None = None
        self._ready: Event = self._context.Event()
        self._restart_at = 0.0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> DashboardProcess:
        """Start the process (it takes a few seconds to import; `wait_ready` waits for it)."""
        self._ready = self._context.Event()
        self._process = self._context.Process(
            target=dashboard_main, args=(self.settings, self._socket, os.getpid(), self._ready),
            name="psma-dashboard",
        )
        self._process.start()
        log.info("dashboard listening", extra={"url": f"http://{self.host}:{self.port}/", "pid": self.pid})
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> bool:
        """Wait until the process serves, so that "node started" means the dashboard answers too."""
        if self._ready.wait(timeout):
            return True
        log.warning(
            "dashboard not ready yet: the node starts without waiting longer", extra={"pid": self.pid}
        )
        return False

    def supervise(self) -> None:
        """Restart the dashboard process if it died (after a short delay)."""
        if self._process is None or self._process.is_alive():
            return
        now = time.monotonic()
        if self._restart_at == 0.0:
            self._process.join(0)
            log.error("dashboard process died", extra={"exitcode": self._process.exitcode})
            self._restart_at = now + RESTART_DELAY_S
        if now >= self._restart_at:
            self._restart_at = 0.0
            self.start()

    def stop(self) -> None:
        """SIGTERM the process (uvicorn finishes requests under way), kill it if it lingers."""
        if self._process is not None:
            self._process.terminate()
            self._process.join(10)
            if self._process.is_alive():
                log.warning("dashboard process did not stop in time: killed")
                self._process.kill()
                self._process.join(5)
        self._socket.close()
