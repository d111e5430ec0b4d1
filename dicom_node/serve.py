"""`psma-node serve`: the receiving process, and the worker and dashboard processes it supervises.

One process receives (SCP), assembles studies and sends results on scheduler ticks; analyses run in worker
processes and the dashboard in its own process, so that neither ever holds the receiver's GIL. Everything
that could stop the node is checked before any part starts (`preflight`), so a bad setting ends `serve`
with one line instead of a half-started node.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from db.session import make_session_factory
from dicom_node import readiness
from dicom_node.admission import unbound_exposure
from dicom_node.assemble import Assembler
from dicom_node.config import Settings
from dicom_node.evaluation.monitoring import monitoring_tick
from dicom_node.evaluation.sr_intake import AssessmentIntake
from dicom_node.jobs import requeue_expired_jobs
from dicom_node.log import configure_logging
from dicom_node.preflight import StartupError, check_before_start, create_folders, open_database
from dicom_node.receive import AssociationEnd, Receiver
from dicom_node.receiving_processes import ReceivingProcesses
from dicom_node.retention import retention_tick
from dicom_node.send import Sender
from dicom_node.store import reconcile_storage
from dicom_node.wake import OUTBOX, WakeLoop, listen
from dicom_node.web.server import DashboardProcess
from dicom_node.worker import WorkerPool

log = logging.getLogger(__name__)


def _periodic(scheduler: BackgroundScheduler, func: Any, seconds: float, *args: Any) -> None:
    scheduler.add_job(
        func, "interval", seconds=seconds, args=args, max_instances=1, coalesce=True,
        id=func.__name__, misfire_grace_time=None,
    )


def _start_listener(receiver: Receiver, settings: Settings, processes: ReceivingProcesses | None) -> None:
    """Listen for DICOM; a port taken since the pre-flight check is still one clear line."""
    try:
        receiver.start(processes.hand_over if processes is not None else None)
    except OSError as exc:
        node = settings.node
        raise StartupError(
            f"node.port {node.port} on {node.bind}: cannot listen: {exc.strerror or exc}: "
            "stop the program using it or change node.port"
        ) from None


def _association_ended(assembler: Assembler, end: AssociationEnd) -> None:
    if end.study_ids:
        assembler.association_closed(set(end.study_ids), end.released)


def _announce_ready(settings: Settings, sessions: sessionmaker[Session], started: float) -> bool:
    """Log once that the node is ready (`readiness`): until then a study sent waits for a worker."""
    try:
        found = readiness.problems(settings, sessions)
    except SQLAlchemyError:  # the database is down for a moment: ask again next second
        return False
    if found:
        return False
    log.info("node ready", extra={"seconds_after_start": round(time.monotonic() - started, 1)})
    return True


def serve(settings: Settings, stop: threading.Event | None = None, config_file: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT (or `stop` is set), then shut every part down in order."""
    started = time.monotonic()
    check_before_start(settings)
    engine = open_database(settings)
    create_folders(settings)
    configure_logging(settings.logging)
    log.info("configuration read", extra={"file": str(config_file) if config_file else "(given in code)"})
    exposure = unbound_exposure(settings.node)
    if exposure is not None:
        log.warning("calling AE titles open to any host", extra={"reason": exposure})
    stop = stop or threading.Event()
    sessions = make_session_factory(engine)

    # The dashboard process imports for a few seconds: started first, it is ready when receiving starts.
    dashboard = DashboardProcess(settings).start() if settings.dashboard.enabled else None
    reconcile_storage(settings, sessions)
    receiver = Receiver(settings, sessions)
    process_count = settings.node.receiving_process_count()
    processes = ReceivingProcesses(settings, process_count) if process_count else None
    # Assembly runs every tick, and at once when a sender releases its association: a study proven
    # complete whose senders are all done is queued without the settle window (completeness.decide).
    assembler = Assembler()
    assembly = WakeLoop("assembly", partial(assembler.tick, settings, sessions),
                        settings.assembly.tick_seconds)
    assembler.on_handover = assembly.wake
    if processes is not None:
        assembler.delivering = processes.studies_in_transfer
        processes.on_association_closed = assembler.association_closed
        processes.on_connection_closed = receiver.connection_closed
    else:
        assembler.delivering = receiver.studies_in_transfer
        receiver.on_association_ended = partial(_association_ended, assembler)
    try:
        if processes is not None:
            processes.start()
        if dashboard is not None:
            dashboard.wait_ready()
        _start_listener(receiver, settings, processes)
    except BaseException:
        if processes is not None:
            processes.stop()
        if dashboard is not None:
            dashboard.stop()
        raise

    scheduler = BackgroundScheduler(timezone="UTC")
    _periodic(scheduler, requeue_expired_jobs, max(1.0, settings.workers.lease_seconds / 3), settings, sessions)
    if settings.retention.enabled:
        _periodic(scheduler, retention_tick, settings.retention.tick_seconds, settings, sessions)
    if settings.monitoring.enabled:
        _periodic(scheduler, monitoring_tick, settings.monitoring.tick_seconds, settings, sessions)
    # Readers' assessment SRs are read here, not where they are received: receiving stays fast.
    _periodic(scheduler, AssessmentIntake().read_new_srs, settings.results.assessment_intake_seconds, settings,
              sessions)
    scheduler.start()
    # The sender runs every send tick, and at once when a worker publishes a result (wake.OUTBOX).
    sender = Sender(settings, sessions)
    sending = WakeLoop("send", sender.tick, settings.results.send_tick_seconds,
                       listen(settings.database.url.get_secret_value(), OUTBOX))
    assembly.start()
    sending.start()

    workers = WorkerPool(settings, sessions)
    workers.start()

    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    log.info("node started", extra={"ae_title": settings.node.ae_title, "port": receiver.port})
    ready = False
    try:
        while not stop.wait(1.0):
            ready = ready or _announce_ready(settings, sessions, started)
            workers.supervise()
            if processes is not None:
                processes.supervise()
            if dashboard is not None:
                dashboard.supervise()
    finally:
        log.info("node stopping")
        if dashboard is not None:
            dashboard.stop()
        receiver.stop()
        if processes is not None:
            processes.stop()
        assembly.stop()
        sending.stop()
        scheduler.shutdown(wait=True)
        sender.wait_idle(timeout=settings.node.network_timeout_s)  # a delivery under way finishes
        workers.stop()
        engine.dispose()
        log.info("node stopped")
