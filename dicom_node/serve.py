"""`psma-node serve`: the receiving process and the workers it supervises.

One process receives (SCP), assembles studies and sends results on scheduler ticks, and serves the
dashboard; analyses run in separate worker processes so that the GIL never slows receiving down.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from db.session import ensure_schema, make_engine, make_session_factory
from dicom_node.assemble import assembly_tick
from dicom_node.config import Settings
from dicom_node.jobs import requeue_expired_jobs
from dicom_node.log import configure_logging
from dicom_node.receive import Receiver
from dicom_node.retention import retention_tick
from dicom_node.send import send_tick, wait_idle
from dicom_node.store import reconcile_storage
from dicom_node.web.server import start_dashboard
from dicom_node.worker import WorkerPool

log = logging.getLogger(__name__)


def _periodic(scheduler: BackgroundScheduler, func: Any, seconds: float, *args: Any) -> None:
    scheduler.add_job(
        func, "interval", seconds=seconds, args=args, max_instances=1, coalesce=True,
        id=func.__name__, misfire_grace_time=None,
    )


def serve(settings: Settings, stop: threading.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `stop` is set), then shut every part down in order."""
    configure_logging(settings.logging)
    stop = stop or threading.Event()
    url = settings.database.url.get_secret_value()
    engine = make_engine(url)
    ensure_schema(engine, url, settings.database.auto_upgrade)
    sessions = make_session_factory(engine)
    settings.storage.directory.mkdir(parents=True, exist_ok=True)
    settings.storage.results_directory.mkdir(parents=True, exist_ok=True)

    reconcile_storage(settings, sessions)
    dashboard = start_dashboard(settings, sessions) if settings.dashboard.enabled else None
    receiver = Receiver(settings, sessions)
    receiver.start()

    scheduler = BackgroundScheduler(timezone="UTC")
    _periodic(scheduler, assembly_tick, settings.assembly.tick_seconds, settings, sessions)
    _periodic(scheduler, requeue_expired_jobs, max(1.0, settings.workers.lease_seconds / 3), settings, sessions)
    _periodic(scheduler, send_tick, settings.results.send_tick_seconds, settings, sessions)
    if settings.retention.enabled:
        _periodic(scheduler, retention_tick, settings.retention.tick_seconds, settings, sessions)
    scheduler.start()

    workers = WorkerPool(settings)
    workers.start()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    log.info("node started", extra={"ae_title": settings.node.ae_title, "port": receiver.port})
    try:
        while not stop.wait(1.0):
            workers.supervise()
    finally:
        log.info("node stopping")
        if dashboard is not None:
            dashboard.stop()
        receiver.stop()
        scheduler.shutdown(wait=True)
        wait_idle(timeout=settings.node.network_timeout_s)  # a delivery under way finishes, not resent
        workers.stop()
        engine.dispose()
        log.info("node stopped")
