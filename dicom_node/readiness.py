"""Readiness: will a study sent now be received and analysed at once?

`/healthz` is liveness (database, folders, disk: the node must be restarted when it fails). Readiness adds
what a starting node lacks for a while: the DICOM listener accepts connections, and at least one analysis
worker has warmed up. A worker writes its heartbeat row only after its warm-up: every installed model its
routing uses is loaded (checked and built), or, with no weights installed, the rest of the warm-up is done
(torch, the deterministic settings, highdicom's tables); the row is then renewed every few seconds. So a
fresh heartbeat row is a worker that runs a job without delay, whether `serve` started it or it runs
elsewhere on the shared database (`psma-node worker`). Until then a queued study waits, and its timeline
says so (`waiting_note`). Used by `/readyz`, `psma-node doctor` and `serve` (which logs once when ready).
"""

from __future__ import annotations

import datetime as dt
import socket

from sqlalchemy.orm import Session, sessionmaker

from db.queries import workers
from dicom_node.config import NodeSettings, Settings
from dicom_node.metrics import worker_stale_seconds

LISTENER_TIMEOUT_S = 1.0


def local_address(bind: str) -> str:
    """Where this machine reaches a socket bound to `bind` (a wildcard bind is reached on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(bind, bind)


def listener_problem(node: NodeSettings, timeout: float = LISTENER_TIMEOUT_S) -> str | None:
    """Why the DICOM listener does not accept connections, or None (a bare connect: the gate closes it
    unreported, as it does a port probe)."""
    host = local_address(node.bind)
    try:
        with socket.create_connection((host, node.port), timeout=timeout):
            return None
    except OSError as exc:
        return f"DICOM listener on {host}:{node.port} does not accept connections ({exc.strerror or exc})"


def worker_problem(settings: Settings, session: Session) -> str | None:
    """Why no analysis worker can take a job now, or None."""
    stale_after = dt.timedelta(seconds=worker_stale_seconds(settings))
    rows = workers(session, stale_after=stale_after)
    if any(row.alive for row in rows):
        return None
    if rows:
        return (f"no analysis worker is ready: {len(rows)} registered, none with a heartbeat within "
                f"{stale_after.total_seconds():g} s")
    return ("no analysis worker is ready: none has finished loading its model yet "
            f"(workers.count {settings.workers.count} here; a worker registers once warmed up)")


def problems(settings: Settings, sessions: sessionmaker[Session]) -> list[str]:
    """Reasons the node is not ready; empty when it is."""
    found = []
    listener = listener_problem(settings.node)
    if listener is not None:
        found.append(listener)
    with sessions() as session:
        worker = worker_problem(settings, session)
    if worker is not None:
        found.append(worker)
    return found


def waiting_note(settings: Settings, session: Session) -> str | None:
    """What a study queued now waits for, when no worker can take it yet (for its timeline), or None."""
    problem = worker_problem(settings, session)
    return None if problem is None else f"waiting for a worker: {problem}"
