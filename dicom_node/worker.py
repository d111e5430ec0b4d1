"""Analysis worker processes: claim a job, run it, keep its lease alive, and supervise the processes.

Workers are separate processes (multiprocessing "spawn": no state inherited from the receiving process, no
torch in the receiver) so that CPU-heavy analysis never holds the receiver's GIL. Each worker has an id
(host, pid, random suffix) written on its jobs and its WorkerHeartbeat row; a thread renews the lease of the
job it runs. `WorkerPool` starts them, restarts dead ones (re-queueing what a dead one held at once instead
of waiting for its lease) and stops them, releasing their jobs. `psma-node worker` runs a pool alone, e.g. on
a GPU machine sharing the PostgreSQL database and the storage folder.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

from sqlalchemy import delete
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from db.clock import utcnow
from db.models import WorkerHeartbeat
from db.session import make_engine, make_session_factory, transaction
from dicom_node.config import Settings
from dicom_node.jobs import claim_next_job, renew_lease, requeue_expired_jobs, requeue_worker_jobs
from dicom_node.log import configure_logging
from dicom_node.restarts import RestartSchedule
from dicom_node.wake import JOBS, listen
from inference.runtime import prefer_passive_openmp

log = logging.getLogger(__name__)

DB_RETRY_S = 5.0
"""Wait after a failed database call before a worker tries again."""


class WorkerStopping(BaseException):
    """Raised in a busy worker's main thread by SIGTERM: release the job and exit.

    A BaseException (like KeyboardInterrupt) so that the analysis' own error handling cannot mistake it for
    a failed analysis."""


def new_worker_id(index: int) -> str:
    """Unique across machines and restarts; the process id is in the worker's heartbeat row."""
    return f"{socket.gethostname()}:w{index}:{uuid.uuid4().hex[:8]}"


class _Heartbeat(threading.Thread):
    """Renews the current job's lease and the worker's heartbeat row while the main thread analyses."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], worker_id: str) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.settings = settings
        self.sessions = sessions
        self.worker_id = worker_id
        self.job_id: int | None = None
        self.lost: set[int] = set()
        self.stop = threading.Event()
        self.interval = min(5.0, settings.workers.lease_seconds / 3)

    def beat(self) -> None:
        job_id = self.job_id
        if job_id is not None and job_id not in self.lost:
            renewed = renew_lease(self.sessions, job_id, self.worker_id, self.settings.workers.lease_seconds)
            if not renewed and self.job_id == job_id:
                self.lost.add(job_id)
                log.info(
                    "lease not renewed: the job is no longer this worker's (finished, cancelled or "
                    "re-queued)",
                    extra={"job_id": job_id, "worker_id": self.worker_id},
                )
        with transaction(self.sessions) as session:
            row = session.get(WorkerHeartbeat, self.worker_id)
            if row is not None:
                row.heartbeat_at = utcnow()
                row.current_job_id = job_id

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.beat()
            except Exception:
                log.exception("heartbeat failed", extra={"worker_id": self.worker_id})


def _warn_about_missing_weights(settings: Settings) -> None:
    """Say at start-up, not at the first study, that results will carry no classification."""
    from inference.checkpoints import installed_model, missing_weights_message
    from inference.model_specs import routable_models

    models = settings.models
    for model_id in routable_models(models.routing, models.default_model):
        if installed_model(models.models_dir, model_id) is None:
            log.warning("classifier weights missing: analyses report quantitative findings only",
                        extra={"model": model_id, "fix": missing_weights_message(model_id, models.models_dir)})


def worker_main(settings: Settings, worker_id: str, parent_pid: int | None) -> None:
    """Entry point of a worker process: loop claiming and running jobs until told to stop."""
    prefer_passive_openmp()  # before resolve_device imports torch
    configure_logging(settings.logging)
    stop = threading.Event()
    busy = threading.Event()
    starting = threading.Event()  # loading torch & co. (seconds): a stop need not wait for it to finish
    starting.set()
    url = settings.database.url.get_secret_value()
    jobs_queued = listen(url, JOBS)  # rung when a job is queued: an idle worker starts it at once

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()
        jobs_queued.interrupt()
        if busy.is_set() or starting.is_set():
            busy.clear()
            starting.clear()
            raise WorkerStopping()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent stops us.
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    try:
        from inference.network import resolve_device  # the one device rule; serve/worker checked it first

        device = resolve_device(settings.models.device).type
        if settings.workers.torch_threads:
            import torch

            torch.set_num_threads(settings.workers.torch_threads)
        from dicom_node.infer import run_job, warm_up  # heavy imports (torch, monai) only in worker processes
        from inference.network import make_deterministic

        make_deterministic()  # its first call imports torch._inductor (1-3 s): not while a study waits
        warm_up(settings, device)  # the models and highdicom's tables (~1-3 s): not in the first job either
        _warn_about_missing_weights(settings)
        starting.clear()
    except WorkerStopping:  # stopped while loading: it holds no job and has no heartbeat row yet
        jobs_queued.close()
        engine.dispose()
        log.info("worker stopped while starting", extra={"worker_id": worker_id})
        return

    with transaction(sessions) as session:
        session.merge(
            WorkerHeartbeat(
                id=worker_id,
                host=socket.gethostname(),
                pid=os.getpid(),
                device=device,
                started_at=utcnow(),
                heartbeat_at=utcnow(),
            )
        )
    heartbeat = _Heartbeat(settings, sessions, worker_id)
    heartbeat.start()
    log.info("worker started", extra={"worker_id": worker_id, "device": device})
    sweep_every = max(1.0, settings.workers.lease_seconds / 3)
    next_sweep = 0.0
    try:
        while not stop.is_set():
            if parent_pid is not None and os.getppid() != parent_pid:
                log.warning("supervisor gone: worker exits", extra={"worker_id": worker_id})
                break
            try:
                if time.monotonic() >= next_sweep:
                    # Workers sweep too, so that jobs of dead workers resume while no `serve` is running.
                    requeue_expired_jobs(settings, sessions)
                    next_sweep = time.monotonic() + sweep_every
                job = claim_next_job(sessions, worker_id, settings.workers.lease_seconds)
            except OperationalError:
                log.exception("database unavailable: worker retries", extra={"worker_id": worker_id})
                stop.wait(DB_RETRY_S)
                continue
            if job is None:
                jobs_queued.wait(settings.workers.poll_seconds)  # polling stays the fallback
                continue
            heartbeat.job_id = job.id
            try:
                busy.set()
                run_job(settings, sessions, job, worker_id, device)
            except WorkerStopping:
                log.info(
                    "worker stopping mid-job: releasing it", extra={"worker_id": worker_id, "job_id": job.id}
                )
            finally:
                busy.clear()
                heartbeat.job_id = None
    except WorkerStopping:
        pass
    finally:
        heartbeat.stop.set()
        requeue_worker_jobs(settings, sessions, worker_id, died=False)
        with transaction(sessions) as session:
            session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.id == worker_id))
        jobs_queued.close()
        engine.dispose()
        log.info("worker stopped", extra={"worker_id": worker_id})


@dataclass
class _Slot:
    index: int
    worker_id: str
    process: BaseProcess
    restarts: RestartSchedule


class WorkerPool:
    """settings.workers.count worker processes, restarted when they die, stopped with their jobs released."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], count: int | None = None) -> None:
        """`sessions` (the caller's; the caller disposes its engine) re-queue the jobs of stopped workers."""
        self.settings = settings
        self.sessions = sessions
        self.count = settings.workers.count if count is None else count
        self._context = multiprocessing.get_context("spawn")
        self._slots: list[_Slot] = []

    def _spawn(self, index: int, restarts: RestartSchedule) -> _Slot:
        worker_id = new_worker_id(index)
        process = self._context.Process(
            target=worker_main,
            args=(self.settings, worker_id, os.getpid()),
            name=f"psma-worker-{index}",
        )
        process.start()
        log.info("worker process started", extra={"worker_id": worker_id, "pid": process.pid})
        return _Slot(index, worker_id, process, restarts)

    def start(self) -> None:
        """Start settings.workers.count processes."""
        self._slots = [self._spawn(index, RestartSchedule()) for index in range(self.count)]

    def supervise(self) -> None:
        """Re-queue the jobs of dead workers now and restart them (backing off if they keep dying)."""
        now = time.monotonic()
        for position, slot in enumerate(self._slots):
            if slot.process.is_alive():
                continue
            delay = slot.restarts.died(now)
            if delay is not None:
                slot.process.join(0)
                moved = requeue_worker_jobs(self.settings, self.sessions, slot.worker_id, died=True)
                log.error(
                    "worker process died",
                    extra={
                        "worker_id": slot.worker_id,
                        "exitcode": slot.process.exitcode,
                        "jobs_requeued": moved,
                        "restart_in_s": delay,
                    },
                )
            if slot.restarts.due(now):
                slot.restarts.restarted(now)
                self._slots[position] = self._spawn(slot.index, slot.restarts)

    def stop(self) -> None:
        """SIGTERM every worker (a busy one releases its job), wait, then kill stragglers."""
        for slot in self._slots:
            if slot.process.is_alive():
                slot.process.terminate()
        deadline = time.monotonic() + self.settings.workers.stop_grace_seconds
        for slot in self._slots:
            slot.process.join(max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                log.warning("worker did not stop in time: killed", extra={"worker_id": slot.worker_id})
                slot.process.kill()
                slot.process.join(5)
            requeue_worker_jobs(self.settings, self.sessions, slot.worker_id, died=False)
        self._slots = []


def run_workers(settings: Settings, count: int, stop: threading.Event | None = None) -> None:
    """`psma-node worker`: a pool without the receiver, until SIGTERM/SIGINT."""
    configure_logging(settings.logging)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    engine = make_engine(settings.database.url.get_secret_value())
    pool = WorkerPool(settings, make_session_factory(engine), count)
    pool.start()
    log.info("workers started", extra={"count": count})
    try:
        while not stop.wait(1.0):
            pool.supervise()
    finally:
        pool.stop()
        engine.dispose()
