"""The DICOM port's defence against peers that hold connections without speaking DICOM.

pynetdicom gives every accepted TCP connection its own threads at once and reads each PDU with blocking
socket reads that have no deadline. So idle connections, a peer stalling mid-PDU, or bytes that are not DICOM
(an HTTP request, a port scanner) each held threads and a slot for as long as the peer liked, and its own
association ceiling (which counts such connections) rejected real senders without a word. `ConnectionGate`
sits in front of it: one thread with a selector accepts every connection and holds it, with no thread of
its own, until its complete A-ASSOCIATE-RQ has arrived (within `acse_timeout_s`, and within `pdu_timeout_s`
once it has begun) and decodes; bytes that cannot start one close the connection at once. The number of
such waiting connections is bounded (`max_pending_connections`; an idle one of the source holding the most
makes room) and so is each source's share (`max_connections_per_host`). Only then is the connection handed
on (to pynetdicom in this process, or to a receiving process), together with the request already read. TLS
handshakes run in the gate too. Once handed over, `acceptor.GuardedSocket` puts a deadline on every PDU.

Every connection the node closes is logged and audited by `ClosureReporter`: the first per source at once,
the rest as one summary per source and `connection_report_seconds`, so a flood cannot fill log or database.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from pynetdicom.pdu import A_ASSOCIATE_RQ

from dicom_node.config import NodeSettings
from dicom_node.flood_windows import FloodWindows, Window

log = logging.getLogger(__name__)

_HEADER_BYTES = 6  # PDU type, reserved, 4-byte length (PS3.8 9.3.1)
_ASSOCIATE_RQ = 0x01
_MIN_ASSOCIATE_RQ = 68  # the fixed fields of an A-ASSOCIATE-RQ, before its variable items (PS3.8 9.3.2)
# storescu proposing every storage class sends ~15 kB; anything far beyond is not a real request.
MAX_ASSOCIATE_RQ_BYTES = 256 * 1024
_HTTP_METHODS = (b"GET ", b"POST", b"PUT ", b"HEAD", b"OPTI", b"DELE", b"PATC", b"CONN", b"PRI ")
_WAKE = object()
GATE_THREAD = "dicom-gate"


def describe_first_bytes(data: bytes) -> str:
    """What a non-DICOM peer sent, for the reason text (printable, short)."""
    if data.startswith(_HTTP_METHODS):
        kind = "an HTTP request"
    elif data[:2] == b"\x16\x03":
        kind = "a TLS handshake on a plain DICOM port"
    else:
        kind = "not a DICOM association request"
    return f"{kind} (first bytes {bytes(data[:16])!r})"


def associate_request_problem(data: bytes | bytearray) -> str | None:
    """Why `data` (the bytes so far) cannot be the start of an A-ASSOCIATE-RQ; None while it can."""
    if data[0] != _ASSOCIATE_RQ:
        return describe_first_bytes(data)
    if len(data) < _HEADER_BYTES:
        return None
    length = struct.unpack_from(">L", data, 2)[0]
    if not _MIN_ASSOCIATE_RQ <= length <= MAX_ASSOCIATE_RQ_BYTES:
        return (f"A-ASSOCIATE-RQ length {length} outside {_MIN_ASSOCIATE_RQ}..{MAX_ASSOCIATE_RQ_BYTES} "
                f"(first bytes {bytes(data[:16])!r})")
    if len(data) == _HEADER_BYTES + length:
        try:
            A_ASSOCIATE_RQ().decode(bytes(data))
        except Exception as exc:  # noqa: BLE001 - any decoding failure means a malformed request
            return f"malformed A-ASSOCIATE-RQ: {type(exc).__name__}: {exc}"
    return None


# ---------------------------------------------------------------------------------------------- reporting


class Closures(Protocol):
    """Where closed and refused connections are reported: a `ClosureReporter`, or in a receiving process
    the channel that forwards them to the one in `serve` (so a source is summarised once, not per process)."""

    def closed(self, peer: str, kind: str, reason: str, action: str = "connection-closed",
               event: str = "connection closed", per_reason: bool = False, **detail: Any) -> None: ...

    def close(self) -> None: ...


class ClosureReporter:
    """Logs and audits connections the node closes or refuses: a source's first one in an interval at
    once, the rest of that interval as one summary (`flood_windows`), so no flood can grow the log or the
    audit table."""

    def __init__(self, interval_s: float, audit: Callable[..., None]) -> None:
        self._interval = interval_s
        self._audit = audit
        self._windows = FloodWindows(interval_s)
        # Audit rows are written off the caller's thread: the gate must never wait for the database.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="port-guard-audit")

    def closed(self, peer: str, kind: str, reason: str, action: str = "connection-closed",
               event: str = "connection closed", per_reason: bool = False, **detail: Any) -> None:
        """One connection closed or refused by the node, or lost mid-PDU; `kind` is a short category.
        Counted per source, or per source and reason with `per_reason` (association rejections, where
        each distinct reason, e.g. another calling AE title, is worth its own row)."""
        key = (peer, reason) if per_reason else (peer,)
        opened, ended = self._windows.record(key, kind, peer=peer, action=action, reason=reason)
        self._summarise(ended)
        if not opened:
            return
        log.warning(event, extra={"peer": peer, "kind": kind, "reason": reason,
                                  **{k: v for k, v in detail.items() if k != "actor"},
                                  **({"calling_ae": detail["actor"]} if "actor" in detail else {})})
        self._write("association", action, outcome="rejected" if action == "rejected" else "refused",
                    reason=reason, peer=peer, kind=kind, **detail)

    def flush(self, everything: bool = False) -> None:
        """Write the summaries of intervals that have ended (all of them with `everything`)."""
        self._summarise(self._windows.take_due(everything))

    def _summarise(self, windows: list[Window]) -> None:
        for window in windows:
            if not window.counts:
                continue
            peer, action, reason = window.first["peer"], window.first["action"], window.first["reason"]
            total = window.suppressed
            kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(window.counts.items()))
            if action == "rejected":
                text = (f"{total} more association(s) from {peer} rejected within {self._interval:g} s "
                        f"({kinds}): {reason}")
            else:
                text = f"{total} more connection(s) from {peer} closed within {self._interval:g} s ({kinds})"
            log.warning("connections closed" if action != "rejected" else "associations rejected",
                        extra={"peer": peer, "count": total, "kinds": kinds})
            self._write("association", action, outcome="rejected" if action == "rejected" else "refused",
                        reason=text, peer=peer, kind="summary", count=total, counts=dict(window.counts))

    def _write(self, *args: Any, **fields: Any) -> None:
        try:
            self._writer.submit(self._audit, *args, **fields)
        except RuntimeError:  # after close(): an association still ending during shutdown
            log.debug("audit writer closed; connection event not audited", extra={"reason": fields.get("reason")})

    def close(self) -> None:
        self.flush(everything=True)
        self._writer.shutdown(wait=True)


# ---------------------------------------------------------------------------------------------- the gate


class _Waiting:
    """A connection the gate holds until its A-ASSOCIATE-RQ is complete."""

    __slots__ = ("address", "data", "deadline", "events", "handshaking", "peer", "since", "sock")

    def __init__(self, sock: socket.socket, address: tuple[str, int], now: float, deadline: float,
                 tls: bool) -> None:
        self.sock = sock
        self.address = address
        self.peer = str(address[0])
        self.since = now
        self.deadline = deadline
        self.data = bytearray()
        self.handshaking = tls
        self.events = selectors.EVENT_READ

    def missing(self) -> int:
        """Bytes still needed to complete the request (header first, then the length it states)."""
        if len(self.data) < _HEADER_BYTES:
            return _HEADER_BYTES - len(self.data)
        return _HEADER_BYTES + struct.unpack_from(">L", self.data, 2)[0] - len(self.data)


HandOver = Callable[[socket.socket, tuple[str, int], bytes], None]


class ConnectionGate:
    """Accepts connections on the listening socket and hands over those with a valid A-ASSOCIATE-RQ."""

    def __init__(self, listener: socket.socket, node: NodeSettings, tls: ssl.SSLContext | None,
                 hand_over: HandOver, reporter: ClosureReporter) -> None:
        self._listener = listener
        self._node = node
        self._tls = tls
        self._hand_over = hand_over
        self._reporter = reporter
        self._selector = selectors.DefaultSelector()
        self._waiting: dict[socket.socket, _Waiting] = {}
        self._per_host: dict[str, int] = {}
        self._strikes: dict[str, int] = {}
        self._strikes_since = time.monotonic()
        self._wake_read, self._wake_write = socket.socketpair()
        self._stopping = False
        self._accept_paused_until = 0.0
        self._thread = threading.Thread(target=self._run, name=GATE_THREAD, daemon=True)

    def start(self) -> None:
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_read.setblocking(False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, _WAKE)
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting and close every connection still waiting (their peers may retry)."""
        self._stopping = True
        self._wake_write.send(b"x")
        self._thread.join(timeout=10)
        for waiting in list(self._waiting.values()):
            self._forget(waiting)
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()

    # -------------------------------------------------------------------------------------- loop

    def _run(self) -> None:
        last_flush = time.monotonic()
        while not self._stopping:
            now = time.monotonic()
            timeout = min([1.0, *(w.deadline - now for w in self._waiting.values())])
            for key, _mask in self._selector.select(max(timeout, 0.0)):
                try:
                    if key.data is None:
                        self._accept()
                    elif key.data is _WAKE:
                        self._wake_read.recv(64)
                    else:
                        self._advance(key.data)
                except Exception:  # a bug must cost one connection, never the port
                    log.exception("DICOM gate failed on a connection")
                    if isinstance(key.data, _Waiting):
                        self._forget(key.data)
            now = time.monotonic()
            self._expire(now)
            if now >= self._accept_paused_until and self._accept_paused_until:
                self._accept_paused_until = 0.0
                self._selector.register(self._listener, selectors.EVENT_READ, None)
            if now - last_flush >= 1.0:
                self._reporter.flush()
                last_flush = now
            if now - self._strikes_since >= self._node.connection_report_seconds:
                self._strikes.clear()
                self._strikes_since = now

    def _accept(self) -> None:
        for _ in range(64):  # then serve the waiting ones: a flood of connects must not starve them
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, most likely: pause accepting briefly
                log.error("cannot accept a connection", extra={"error": str(exc)})
                self._selector.unregister(self._listener)
                self._accept_paused_until = time.monotonic() + 0.5
                return
            self._admit(sock, (str(address[0]), int(address[1])))

    def _admit(self, sock: socket.socket, address: tuple[str, int]) -> None:
        node = self._node
        peer = address[0]
        held = self._per_host.get(peer, 0)
        if held >= node.max_connections_per_host:
            _close(sock)
            self._strike(peer)
            self._reporter.closed(peer, "host-limit", f"{peer} already has {held} connections waiting to "
                                  f"associate (max_connections_per_host {node.max_connections_per_host})")
            return
        if len(self._waiting) >= node.max_pending_connections:
            self._make_room()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else ~40 ms per DIMSE round trip
        if self._tls is not None:
            sock = self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        now = time.monotonic()
        waiting = _Waiting(sock, address, now, now + node.acse_timeout_s, self._tls is not None)
        self._waiting[sock] = waiting
        self._per_host[peer] = held + 1
        self._selector.register(sock, selectors.EVENT_READ, waiting)

    def _make_room(self) -> None:
        """Close one waiting connection: one that has sent nothing before one that has begun its request,
        then one of the source the gate had to close most connections of lately, then of the source holding
        the most, then the oldest. A real sender's request follows its connect within milliseconds and its
        source has no record, so a flood's connections go first even when the flood keeps reconnecting."""
        victim = min(self._waiting.values(), key=lambda w: (
            bool(w.data), -self._strikes.get(w.peer, 0), -self._per_host[w.peer], w.since))
        self._drop(victim, "pending-limit",
                   f"closed to make room: {len(self._waiting)} connections waiting to associate "
                   f"(max_pending_connections {self._node.max_pending_connections}); an idle one of the "
                   f"source with the most closed or waiting")

    def _advance(self, waiting: _Waiting) -> None:
        try:
            if waiting.handshaking and not self._handshake(waiting):
                return
            self._read(waiting)
        except ssl.SSLError as exc:
            self._forget(waiting)
            self._reporter.closed(waiting.peer, "tls", f"TLS handshake failed: {exc}", action="rejected",
                                  tls=True)
        except OSError as exc:  # reset by the peer
            self._lost(waiting, exc)

    def _handshake(self, waiting: _Waiting) -> bool:
        """Drive the TLS handshake without blocking; True once it is done."""
        sock = waiting.sock
        assert isinstance(sock, ssl.SSLSocket)
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self._want(waiting, selectors.EVENT_READ)
            return False
        except ssl.SSLWantWriteError:
            self._want(waiting, selectors.EVENT_WRITE)
            return False
        except (ssl.SSLEOFError, ConnectionResetError, BrokenPipeError):
            # Closed before saying anything: a port probe or health check, not an association attempt.
            log.debug("connection closed during TLS handshake", extra={"peer": waiting.peer})
            self._forget(waiting)
            return False
        waiting.handshaking = False
        self._want(waiting, selectors.EVENT_READ)
        return True

    def _read(self, waiting: _Waiting) -> None:
        while True:
            try:
                chunk = waiting.sock.recv(waiting.missing())
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                return
            except ssl.SSLWantWriteError:
                self._want(waiting, selectors.EVENT_WRITE)
                return
            if not chunk:
                self._lost(waiting, None)
                return
            if not waiting.data:  # the request has begun: the rest is due within the PDU timeout
                waiting.deadline = min(waiting.deadline, time.monotonic() + self._node.pdu_timeout_s)
            waiting.data += chunk
            problem = associate_request_problem(waiting.data)
            if problem is not None:
                if len(waiting.data) < 16:  # a few more bytes, if already there, say what it was
                    try:
                        waiting.data += waiting.sock.recv(16 - len(waiting.data))
                        problem = associate_request_problem(waiting.data) or problem
                    except OSError:
                        pass
                self._drop(waiting, "not-dicom", problem)
                return
            if waiting.missing() == 0:
                self._forget(waiting, close=False)
                waiting.sock.setblocking(True)
                self._hand_over(waiting.sock, waiting.address, bytes(waiting.data))
                return

    def _want(self, waiting: _Waiting, events: int) -> None:
        if waiting.events != events:
            waiting.events = events
            self._selector.modify(waiting.sock, events, waiting)

    def _expire(self, now: float) -> None:
        for waiting in [w for w in self._waiting.values() if w.deadline <= now]:
            if waiting.data:
                expected = _HEADER_BYTES + struct.unpack_from(">L", waiting.data, 2)[0] \
                    if len(waiting.data) >= _HEADER_BYTES else "?"
                self._drop(waiting, "pdu-timeout",
                           f"A-ASSOCIATE-RQ incomplete after pdu_timeout_s ({self._node.pdu_timeout_s:g} s): "
                           f"{len(waiting.data)} of {expected} bytes")
            else:
                what = "TLS handshake and A-ASSOCIATE-RQ" if waiting.handshaking else "A-ASSOCIATE-RQ"
                self._drop(waiting, "acse-timeout",
                           f"no {what} within acse_timeout_s ({self._node.acse_timeout_s:g} s)")

    def _lost(self, waiting: _Waiting, exc: OSError | None) -> None:
        """The peer closed or reset the connection before its request was complete."""
        self._forget(waiting)
        if not waiting.data:  # a port probe or health check: nothing to report
            log.debug("connection closed before any request", extra={"peer": waiting.peer})
            return
        how = f"reset ({exc.strerror or exc})" if exc is not None else "closed by the peer"
        self._reporter.closed(waiting.peer, "lost", f"connection {how} mid A-ASSOCIATE-RQ "
                              f"({len(waiting.data)} bytes received)")

    def _drop(self, waiting: _Waiting, kind: str, reason: str) -> None:
        self._forget(waiting)
        self._strike(waiting.peer)
        self._reporter.closed(waiting.peer, kind, reason)

    def _strike(self, peer: str) -> None:
        """Count a connection the gate had to close against its source (forgotten every report interval)."""
        self._strikes[peer] = self._strikes.get(peer, 0) + 1

    def _forget(self, waiting: _Waiting, close: bool = True) -> None:
        if self._waiting.pop(waiting.sock, None) is None:
            return
        self._selector.unregister(waiting.sock)
        held = self._per_host[waiting.peer] - 1
        if held:
            self._per_host[waiting.peer] = held
        else:
            del self._per_host[waiting.peer]
        if close:
            _close(waiting.sock)


def _close(sock: socket.socket) -> None:
    try:
        sock.close()
    except OSError:
        pass
