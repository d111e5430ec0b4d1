"""Receiving processes: the associations run in several Python processes, so receiving uses several cores.

pynetdicom is pure Python, so the associations of one process share one interpreter lock: four parallel
senders went barely faster than one. Here `serve` keeps the DICOM port and its gate (`port_guard`), and
hands each connection that has delivered a valid A-ASSOCIATE-RQ, with the bytes already read, to the
receiving process with the fewest open associations (the socket travels as a file descriptor over a Unix
socket, `multiprocessing.reduction.send_handle`). Each process runs a `receive.Receiver` with its own
database engine and store; an instance is still answered only once its file and row are durable, and the
store's locks hold across processes (`store.locks`).

What no single process can see stays in `serve`: the association limits per source, per calling AE title,
for callers bound to no host and in all (the gate counts open hand-overs and passes the counts along,
`acceptor.Handover`, `admission.Held`), which studies are being delivered (assembly waits for them), and
when an association ends (assembly queues a proven study at once). A receiving process that dies is
restarted; its open associations are lost like a dropped connection (nothing was answered that was not
durable) and their senders resend. A process also ends when `serve` goes away, even if `serve` was killed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import recv_handle, send_handle
from typing import Any, cast

from dicom_node.acceptor import Handover
from dicom_node.admission import Held, admit, ae_titles, refusal
from dicom_node.config import Settings
from dicom_node.log import configure_logging
from dicom_node.receive import AssociationEnd
from dicom_node.restarts import RestartSchedule

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


@dataclass
class _OpenAssociation:
    """A hand-over not yet reported ended: where it runs, its source and calling AE title, whether it is
    bound to its host, whether its process rejects it (`admission.refusal` on the same request and counts:
    it holds no slot while it ends), and the studies it delivers."""

    process: int
    peer: str
    calling: str
    bound: bool
    rejected: bool
    study_ids: set[int] = field(default_factory=set)


class _Process:
    """One receiving process and the parent's end of its channel."""

    def __init__(self, index: int, process: BaseProcess, channel: Connection, restarts: RestartSchedule) -> None:
        self.index = index
        self.process = process
        self.channel = channel
        self.restarts = restarts
        self.send_lock = threading.Lock()
        self.ready = threading.Event()
        self.alive = True


class ReceivingProcesses:
    """The receiving processes of one `serve`: starts, feeds, supervises and stops them."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self._context = multiprocessing.get_context("spawn")
        self._processes: list[_Process] = []
        self._lock = threading.Lock()
        self._open: dict[int, _OpenAssociation] = {}
        self._next_id = 1
        self._stopping = False
        self._reader: threading.Thread | None = None
        self._reader_wake_read, self._reader_wake_write = self._context.Pipe(duplex=False)
        # Told (study row ids, released?) when an association that delivered instances ends.
        self.on_association_closed: Callable[[set[int], bool], None] | None = None
        # Told what `Closures.closed` the processes report (the gate's reporter: one summary per source).
        self.on_connection_closed: Callable[..., None] | None = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the processes and wait until each serves (so "node started" means ready to receive)."""
        self._processes = [self._spawn(index, RestartSchedule()) for index in range(self.count)]
        self._reader = threading.Thread(target=self._read_reports, name="receiving-reports", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        for child in self._processes:
            if not child.ready.wait(max(0.0, deadline - time.monotonic())):
                log.warning("receiving process not ready yet; the node starts without waiting longer",
                            extra={"receiver_index": child.index, "pid": child.process.pid})
        log.info("receiving processes started", extra={"count": self.count,
                                                        "pids": [c.process.pid for c in self._processes]})

    def _spawn(self, index: int, restarts: RestartSchedule) -> _Process:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(target=receiving_main, args=(self.settings, child_end, index),
                                        name=f"psma-receiver-{index}")
        process.start()
        child_end.close()
        return _Process(index, process, parent_end, restarts)

    def supervise(self) -> None:
        """Restart a receiving process that died (backing off if it keeps dying); `serve` calls it every
        second."""
        now = time.monotonic()
        for position, child in enumerate(list(self._processes)):
            if child.alive or self._stopping:
                continue
            child.restarts.died(now)
            if not child.restarts.due(now):
                continue
            child.process.join(0)
            child.restarts.restarted(now)
            replacement = self._spawn(child.index, child.restarts)
            self._processes[position] = replacement
            self._wake_reader()
            log.warning("receiving process restarted", extra={"receiver_index": child.index,
                                                                "pid": replacement.process.pid})

    def stop(self) -> None:
        """Ask every process to finish (open associations are aborted; their senders resend), then wait."""
        self._stopping = True
        for child in self._processes:
            try:
                with child.send_lock:
                    child.channel.send(None)
            except OSError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in self._processes:
            child.process.join(max(0.0, deadline - time.monotonic()))
            if child.process.is_alive():
                log.error("receiving process did not stop; killed", extra={"pid": child.process.pid})
                child.process.kill()
                child.process.join(5)
        self._wake_reader()
        if self._reader is not None:
            self._reader.join(5)
        for child in self._processes:
            child.channel.close()

    # ------------------------------------------------------------------------------------------ hand-over

    def hand_over(self, sock: socket.socket, address: tuple[str, int], request: bytes) -> None:
        """Called by the gate: pass the connection to the least busy live process (closed here either way)."""
        peer = address[0]
        node = self.settings.node
        calling, called = ae_titles(request)
        with self._lock:
            live = [child for child in self._processes if child.alive]
            if not live:
                sock.close()
                log.error("no receiving process alive: connection closed (its sender retries)",
                          extra={"peer": peer})
                return
            load = {child.index: 0 for child in live}
            for association in self._open.values():
                if association.process in load:
                    load[association.process] += 1
            child = min(live, key=lambda c: (load[c.index], c.index))
            held = Held.among(((a.peer, a.calling, a.bound) for a in self._open.values() if not a.rejected),
                              peer, calling)
            handover = Handover(request, self._next_id, held)
            self._next_id += 1
            self._open[handover.id] = _OpenAssociation(
                child.index, peer, calling, admit(node, calling, peer).bound,
                rejected=refusal(node, calling, called, peer, held) is not None)
        try:
            with child.send_lock:
                child.channel.send((handover, address))
                send_handle(child.channel, sock.fileno(), child.process.pid or 0)
        except OSError as exc:  # the process died a moment ago: the sender sees the connection close
            log.error("cannot hand a connection to a receiving process",
                      extra={"receiver_index": child.index, "peer": peer, "error": str(exc)})
            with self._lock:
                self._open.pop(handover.id, None)
        finally:
            sock.close()

    def studies_in_transfer(self) -> set[int]:
        """Row ids of the studies that open associations, in any process, have delivered instances of."""
        with self._lock:
            return {study_id for association in self._open.values() for study_id in association.study_ids}

    # ------------------------------------------------------------------------------------------ reports

    def _wake_reader(self) -> None:
        self._reader_wake_write.send_bytes(b"")

    def _read_reports(self) -> None:
        while True:
            channels = {child.channel: child for child in self._processes if child.alive}
            for ready in wait([*channels, self._reader_wake_read], timeout=1.0):
                if ready is self._reader_wake_read:
                    self._reader_wake_read.recv_bytes()
                    continue
                child = channels[cast(Connection, ready)]
                try:
                    self._on_report(child, child.channel.recv())
                except (EOFError, OSError):
                    self._lost(child)
            if self._stopping and not any(child.alive for child in self._processes):
                return

    def _on_report(self, child: _Process, report: tuple[Any, ...]) -> None:
        kind = report[0]
        if kind == "ready":
            child.ready.set()
        elif kind == "delivering":
            _kind, handover_id, study_id = report
            with self._lock:
                association = self._open.get(handover_id)
                if association is not None:
                    association.study_ids.add(study_id)
        elif kind == "closed" and self.on_connection_closed is not None:
            _kind, args, detail = report
            self.on_connection_closed(*args, **detail)
        elif kind == "ended":
            end: AssociationEnd = report[1]
            with self._lock:
                association = self._open.pop(end.handover_id, None)
            studies = set(end.study_ids) | (association.study_ids if association is not None else set())
            if studies:
                self._tell_closed(studies, end.released)

    def _lost(self, child: _Process) -> None:
        """The process ended (or its channel broke): its open associations are gone, unreleased."""
        child.alive = False
        child.ready.set()
        with self._lock:
            gone = {key: value for key, value in self._open.items() if value.process == child.index}
            for key in gone:
                del self._open[key]
        studies = {study_id for association in gone.values() for study_id in association.study_ids}
        if studies:
            self._tell_closed(studies, False)
        if not self._stopping:
            log.error("receiving process ended unexpectedly; restarting it",
                      extra={"receiver_index": child.index, "pid": child.process.pid, "open_associations": len(gone)})

    def _tell_closed(self, study_ids: set[int], released: bool) -> None:
        if self.on_association_closed is None:
            return
        try:
            self.on_association_closed(study_ids, released)
        except Exception:  # assembly's own failure must not stop the reports
            log.exception("cannot pass an ended association on to assembly")


# ---------------------------------------------------------------------------------------------- the process


class _ForwardedClosures:
    """`port_guard.Closures` of a receiving process: each report goes to serve's reporter."""

    def __init__(self, report: Callable[..., None]) -> None:
        self._report = report

    def closed(self, peer: str, kind: str, reason: str, action: str = "connection-closed",
               event: str = "connection closed", per_reason: bool = False, **detail: Any) -> None:
        self._report("closed", (peer, kind, reason, action, event, per_reason), detail)

    def close(self) -> None:
        """Nothing is held here: serve's reporter writes the summaries."""


class _Stop(Exception):
    """SIGTERM in a receiving process: finish as if `serve` had asked."""


def _raise_stop(_signum: int, _frame: Any) -> None:
    raise _Stop


def receiving_main(settings: Settings, channel: Connection, index: int) -> None:
    """Entry point of a receiving process: run the associations `serve` hands over until it says stop,
    SIGTERM arrives, or `serve` is gone (its end of the channel closes)."""
    from db.session import make_engine, make_session_factory
    from dicom_node.receive import Receiver

    configure_logging(settings.logging)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; `serve` stops us
    signal.signal(signal.SIGTERM, _raise_stop)
    engine = make_engine(settings.database.url.get_secret_value())
    receiver = Receiver(settings, make_session_factory(engine))
    send_lock = threading.Lock()

    def report(*message: Any) -> None:
        with send_lock:
            try:
                channel.send(message)
            except OSError:  # serve is gone: this process is about to end too
                pass

    receiver.on_association_ended = lambda end: report("ended", end)
    receiver.on_delivering = lambda handover_id, study_id: report("delivering", handover_id, study_id)
    receiver.start_handed_only(_ForwardedClosures(report))
    report("ready")
    log.info("receiving process serving", extra={"receiver_index": index, "pid": os.getpid()})
    try:
        while True:
            message = channel.recv()
            if message is None:
                break
            handover, address = message
            sock = socket.socket(fileno=recv_handle(channel))
            receiver.take(sock, tuple(address), handover)
    except (EOFError, OSError):
        log.warning("serve process gone: receiving process stops", extra={"receiver_index": index})
    except _Stop:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        receiver.stop()
        engine.dispose()
