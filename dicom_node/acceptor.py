"""An association after the gate handed it over: pynetdicom's acceptor, with deadlines and without polling.

pynetdicom's acceptor runs two polling loops per association. Its DUL thread sleeps 1 ms whenever neither
the socket nor its queues hold anything, and its association thread sleeps 1 ms before every look for a
DIMSE message. A sender that waits for each C-STORE response (storescu does) pays both on every instance:
about 1.5 ms of the 3.6 ms a stock pynetdicom SCP takes for one. Here both threads wait on what they wait
for instead:

* `GuardedSocket`: pynetdicom's socket wrapper, fed first with the A-ASSOCIATE-RQ the gate read, reading
  each PDU header and body with a deadline of `pdu_timeout_s` (a peer stalling mid-PDU is cut, and a reset
  or a stall is one log line, not a traceback), and reading one buffer per PDU instead of 4 kB pieces. Its
  `ready` blocks in `select` on the socket and on a wake-up socket that the DUL's outgoing queue
  (`_WakingQueue`) signals, so the DUL thread sleeps until the peer sends or the node answers.
* `AcceptorAssociation`: its reactor blocks on the DIMSE message queue, and looks at release, abort, the
  DUL thread and the idle timer whenever a message was served or `_IDLE_CHECK_S` passed.
* `_AcceptorDimse`: the C-STORE response, sent once per instance, is encoded directly (`store_response`,
  byte-identical to pynetdicom's, tested) instead of through pydicom's writer twice (once to measure the
  command group length): that was a sixth of the association threads' interpreter time.

Patches of pynetdicom internals, tested with pynetdicom 3.0.4 (pinned `>=3.0.4,<3.1` in pyproject.toml):
`GuardedRequestHandler._create_association` replaces pynetdicom's private method of that name (to build an
`AcceptorAssociation` around a `GuardedSocket`), `AcceptorAssociation._run_reactor` replaces the private
reactor loop (same checks in the same order, without the sleep), `_AcceptorDimse.send_msg` sends C-STORE
responses without firing EVT_DIMSE_SENT (which the node does not bind), the DUL's `to_provider_queue` and
`_run_loop_delay` are replaced per association, and `OneLinePeerFaults` relies on the text of a DUL log
message. They can go once pynetdicom reads PDUs with a deadline, lets a server hand over bytes it has
already read, and waits on events instead of polling; re-check them with every pynetdicom upgrade
(tests/dicom_node/receive/test_port_guard.py and test_acceptor.py exercise them).
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
from copy import deepcopy
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE, DimsePrimitiveType
from pynetdicom.events import NotificationEvent
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket, RequestHandler

from dicom_node.admission import Held
from dicom_node.port_guard import GATE_THREAD, Closures

log = logging.getLogger(__name__)

# How long either thread waits for its event before it looks at timers and flags the other side may have
# set (ARTIM, idle timeout, kill): short enough for prompt shutdown, long enough to cost nothing when idle.
_IDLE_CHECK_S = 0.01


class _DulThread(threading.local):
    reported = False


_dul_thread = _DulThread()


class OneLinePeerFaults(logging.Filter):
    """On pynetdicom's loggers: what pynetdicom logs while the gate decodes a request is dropped (the gate
    reports it, aggregated per source), a failure `GuardedSocket` already reported is not logged a second
    time, and an exception is one line (its text) instead of a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.threadName == GATE_THREAD:
            return False
        if _dul_thread.reported and str(record.msg).startswith("The received PDU is shorter than expected"):
            _dul_thread.reported = False
            return False
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = f"{type(exc).__name__}: {exc}"
            # pynetdicom logs a message, then `LOGGER.exception(exc)` with the exception as the message.
            record.msg = text if isinstance(record.msg, BaseException) else f"{record.getMessage()}: {text}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


# pynetdicom modules that log what a peer's faulty bytes cause (filters on a logger do not reach its children)
_PEER_FAULT_LOGGERS = ("dul", "dimse", "dimse_messages", "pdu", "pdu_items", "pdu_primitives", "utils", "fsm",
                       "acse", "association", "dsutils", "presentation", "transport")


def install_log_filters() -> None:
    """Attach `OneLinePeerFaults` once to the pynetdicom loggers that log peer faults."""
    for name in _PEER_FAULT_LOGGERS:
        logger = logging.getLogger(f"pynetdicom.{name}")
        if not any(isinstance(existing, OneLinePeerFaults) for existing in logger.filters):
            logger.addFilter(OneLinePeerFaults())


class _WakingQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's outgoing queue: a primitive put by the association thread (a C-STORE response, a release
    or an abort) wakes the DUL thread out of `GuardedSocket.ready` at once."""

    def __init__(self, wake: socket.socket) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        try:
            self._wake.send(b"\0")
        except (BlockingIOError, OSError):  # already signalled, or the association has ended
            pass


class GuardedSocket(AssociationSocket):
    """pynetdicom's socket wrapper: first the gate's A-ASSOCIATE-RQ, then each PDU header and body within
    `pdu_timeout_s`; `ready` waits for the peer or for something to send instead of being polled."""

    def __init__(self, assoc: Association, client_socket: socket.socket, request: bytes,
                 pdu_timeout_s: float, reporter: Closures) -> None:
        super().__init__(assoc, client_socket=client_socket)
        self._request = bytearray(request)
        self._pdu_timeout = pdu_timeout_s
        self._reporter = reporter
        self._peer = str(assoc.requestor.address or "") or _peer_of(client_socket)
        self._body_next = False  # the DUL reads a PDU's 6-byte header, then its body
        client_socket.settimeout(pdu_timeout_s)
        self._timeout = pdu_timeout_s
        self._wake_read, self.wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        self.wake_write.setblocking(False)

    @property
    def ready(self) -> bool:
        """True when the peer's bytes are waiting. Blocks up to `_IDLE_CHECK_S` while the DUL has nothing
        else to do: woken by the peer, or by the association thread putting something to send."""
        sock = self.socket
        if sock is None or self._is_connected is False:
            return False
        if self._request:
            return True
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        dul = self.assoc.dul
        idle = dul.event_queue.empty() and dul.to_provider_queue.empty() and not dul._kill_thread
        try:
            readable, _, _ = select.select([sock, self._wake_read], [], [], _IDLE_CHECK_S if idle else 0)
        except (OSError, ValueError):
            self.event_queue.put("Evt17")  # transport connection closed
            return False
        if self._wake_read in readable:
            try:
                self._wake_read.recv(4096)
            except OSError:
                pass
        return sock in readable

    def close(self) -> None:
        super().close()
        for end in (self._wake_read, self.wake_write):
            try:
                end.close()
            except OSError:
                pass

    def recv(self, nr_bytes: int) -> bytearray:
        buffer = bytearray(nr_bytes)
        got = 0
        if self._request:
            got = min(nr_bytes, len(self._request))
            buffer[:got] = self._request[:got]
            del self._request[:got]
        sock = self.socket
        deadline = 0.0
        with memoryview(buffer) as view:
            while got < nr_bytes and sock is not None:
                if deadline:
                    timeout = deadline - time.monotonic()
                    if timeout <= 0:
                        self._give_up("pdu-timeout", f"PDU incomplete after pdu_timeout_s "
                                      f"({self._pdu_timeout:g} s): {got} of {nr_bytes} bytes")
                        break
                else:
                    deadline = time.monotonic() + self._pdu_timeout
                    timeout = self._pdu_timeout
                if timeout != self._timeout:
                    sock.settimeout(timeout)
                    self._timeout = timeout
                try:
                    count = sock.recv_into(view[got:])
                except TimeoutError:
                    self._give_up("pdu-timeout", f"PDU incomplete after pdu_timeout_s ({self._pdu_timeout:g} s): "
                                  f"{got} of {nr_bytes} bytes")
                    break
                except OSError as exc:
                    self._ended(got, f"connection lost mid-PDU: {exc.strerror or exc}")
                    break
                if count == 0:
                    self._ended(got, f"connection closed by the peer mid-PDU ({got} of {nr_bytes} bytes)")
                    break
                got += count
        if got < nr_bytes:
            del buffer[got:]
        else:
            self._body_next = not self._body_next
        return buffer

    def _ended(self, got: int, reason: str) -> None:
        """The peer closed or reset the connection; only worth a report inside a PDU."""
        if got == 0 and not self._body_next:
            log.debug("connection ended between PDUs", extra={"peer": self._peer, "reason": reason})
            return
        _dul_thread.reported = True
        self._reporter.closed(self._peer, "lost", reason)

    def _give_up(self, kind: str, reason: str) -> None:
        _dul_thread.reported = True
        self._reporter.closed(self._peer, kind, reason)
        if self.socket is not None:
            try:
                self.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def _peer_of(sock: socket.socket) -> str:
    try:
        return str(sock.getpeername()[0])
    except OSError:
        return ""


_COMMAND_GROUP_LENGTH, _AFFECTED_SOP_CLASS, _COMMAND_FIELD = 0x0000, 0x0002, 0x0100
_MESSAGE_ID_RESPONDED_TO, _DATA_SET_TYPE, _STATUS, _AFFECTED_SOP_INSTANCE = 0x0120, 0x0800, 0x0900, 0x1000
_C_STORE_RSP, _NO_DATA_SET = 0x8001, 0x0101
_LAST_COMMAND_FRAGMENT = b"\x03"  # message control header: command, last fragment (PS3.8 E.2)


def _command_element(element: int, value: bytes) -> bytes:
    """One group-0000 element, implicit VR little endian (the command set's encoding, PS3.7 6.3.1)."""
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _uid_value(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def store_response(response: C_STORE) -> bytes | None:
    """The encoded command set of a C-STORE-RSP, or None when it carries what only pynetdicom's own
    encoder handles (an error comment, an offending element, a UID that is not ASCII)."""
    if response.ErrorComment is not None or response.OffendingElement is not None:
        return None
    parts = []
    try:
        if response.AffectedSOPClassUID is not None:
            parts.append(_command_element(_AFFECTED_SOP_CLASS, _uid_value(response.AffectedSOPClassUID)))
        parts.append(_command_element(_COMMAND_FIELD, struct.pack("<H", _C_STORE_RSP)))
        parts.append(_command_element(_MESSAGE_ID_RESPONDED_TO,
                                      struct.pack("<H", response.MessageIDBeingRespondedTo)))
        parts.append(_command_element(_DATA_SET_TYPE, struct.pack("<H", _NO_DATA_SET)))
        parts.append(_command_element(_STATUS, struct.pack("<H", response.Status)))
        if response.AffectedSOPInstanceUID is not None:
            parts.append(_command_element(_AFFECTED_SOP_INSTANCE, _uid_value(response.AffectedSOPInstanceUID)))
    except (UnicodeEncodeError, struct.error, TypeError):
        return None
    body = b"".join(parts)
    return _command_element(_COMMAND_GROUP_LENGTH, struct.pack("<I", len(body))) + body


class _AcceptorDimse(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider, sending the C-STORE response the short way (see the module text)."""

    def send_msg(self, primitive: DimsePrimitiveType, context_id: int) -> None:
        if isinstance(primitive, C_STORE) and primitive.MessageIDBeingRespondedTo is not None:
            command = store_response(primitive)
            limit = self.maximum_pdu_size
            if command is not None and (not limit or len(command) + 6 <= limit):
                pdata = P_DATA()
                pdata.presentation_data_value_list.append((context_id, _LAST_COMMAND_FRAGMENT + command))
                self.dul.send_pdu(pdata)
                return
        super().send_msg(primitive, context_id)


@dataclass(frozen=True)
class Handover:
    """What the gate hands over with a connection: the A-ASSOCIATE-RQ it read and, when associations run in
    several receiving processes, the hand-over's id and the associations open when it was made
    (`admission.Held`), since no one process sees them all."""

    request: bytes
    id: int = 0
    held: Held | None = None


class AcceptorAssociation(Association):
    """pynetdicom's acceptor association with a reactor that waits for DIMSE messages instead of polling,
    carrying the gate's `Handover` and telling its server when it has ended, whatever the outcome."""

    handover: Handover

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self.dimse = _AcceptorDimse(self)

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        finally:
            cast(Any, self._server).association_ended(self)

    def _run_reactor(self) -> None:
        """Serve DIMSE messages as they complete; after each one (or `_IDLE_CHECK_S` without one) check,
        as pynetdicom's own loop does and in its order: release requested, aborted, DUL thread gone, idle."""
        self._is_paused = False
        messages = self.dimse.msg_queue
        while not self._kill:
            # Paused while a send_*() call of this side's own waits for its response (pynetdicom's contract).
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            try:
                context_id, msg = messages.get(timeout=_IDLE_CHECK_S)
            except queue.Empty:
                context_id, msg = None, None
            if msg:
                self._serve_request(msg, cast(int, context_id))
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires for the abort
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                # A held association: reported once per source and interval like the gate's closures, so a
                # caller that keeps reconnecting to hold its slots is seen without flooding log or audit.
                calling = str(self.requestor.ae_title or "").strip()
                idle = f"network_timeout_s ({self.network_timeout or 0:g} s)"
                cast(Any, self._server).reporter.closed(
                    str(self.requestor.address or ""), "idle-timeout",
                    f"association of {calling!r} idle for {idle}: aborted", actor=calling)
                self.abort()
                self.kill()
                return


class GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler, building an `AcceptorAssociation` around a `GuardedSocket`."""

    server: Any  # receive.NodeServer: take_handover(), association_ended(), pdu_timeout_s, reporter

    def _create_association(self) -> Association:
        server = self.server
        ae = self.ae
        assoc = AcceptorAssociation(ae, MODE_ACCEPTOR)
        assoc._server = server
        # pynetdicom finds its acceptors by this thread name prefix (AssociationServer.active_associations).
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.requestor.address_info = self.remote
        assoc.handover = server.take_handover(self.request)
        guarded = GuardedSocket(assoc, self.request, assoc.handover.request, server.pdu_timeout_s,
                                server.reporter)
        assoc.set_socket(guarded)
        # The DUL thread waits in GuardedSocket.ready, woken by what the association thread queues to send.
        assoc.dul.to_provider_queue = _WakingQueue(guarded.wake_write)
        assoc.dul._run_loop_delay = 0
        acceptor = assoc.acceptor
        acceptor.maximum_length = ae.maximum_pdu_size
        acceptor.ae_title = server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = ae.implementation_class_uid
        acceptor.implementation_version_name = ae.implementation_version_name
        acceptor.supported_contexts = deepcopy(server.contexts)
        for event, bound in server._handlers.items():
            if event.is_intervention:
                if bound:
                    assoc.bind(event, *bound)
            elif isinstance(event, NotificationEvent):
                for handler, args in bound:
                    assoc.bind(event, handler, args)
        return assoc
