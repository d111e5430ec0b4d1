"""C-STORE / C-ECHO service class provider: who may send, what is accepted, and when success is answered.

Success is answered only after `store.InstanceStore.receive` made the instance durable (file fsynced and
renamed, row committed). Everything refused gets a specific status and an audit row naming the reason, and
the association (and the server) carries on. pynetdicom runs one thread per association; handlers do no pixel
decoding. Connections reach pynetdicom only through `port_guard.ConnectionGate` (a complete A-ASSOCIATE-RQ,
within timeouts and per-source limits), and every PDU is read with a deadline (`acceptor`), so no idle or
stalled peer holds a slot. The gate runs in `serve`; the associations run either in its threads or in
receiving processes (`receiving_processes`), which get the connections from the gate with a `Handover`.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, cast

from pydicom.uid import UID
from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy.orm import Session, sessionmaker

from db import audit
from dicom_node.acceptor import AcceptorAssociation, GuardedRequestHandler, Handover, install_log_filters
from dicom_node.admission import Held, admit, refusal
from dicom_node.config import NodeSettings, Settings
from dicom_node.port_guard import ClosureReporter, Closures, ConnectionGate, HandOver
from dicom_node.store import PET_CT_SOP_CLASSES, STATUS_SUCCESS, Caller, Delivery, InstanceStore, clean_text
from dicom_node.transfer_syntaxes import TRANSFER_SYNTAXES

log = logging.getLogger(__name__)

# A-ASSOCIATE-RJ (result, source, diagnostic) per kind of `admission.Refusal`, PS3.8 9.3.4
_REJECTIONS = {"calling-ae": (0x01, 0x01, 0x03), "called-ae": (0x01, 0x01, 0x07), "limit": (0x02, 0x03, 0x02)}
_TRANSFER_SYNTAXES_NOT_SUPPORTED = 0x04  # presentation context result, PS3.8 9.3.3.2


@dataclass(frozen=True)
class AssociationEnd:
    """An association that ended: the id of the hand-over it came with, the study row ids it delivered
    instances of, and whether its sender released it (rather than aborting or losing it)."""

    handover_id: int
    study_ids: frozenset[int]
    released: bool


@dataclass
class _AssociationState:
    """What one association did, for its closing audit row (`caller.study_ids`: the studies it delivered)."""

    caller: Caller
    tls: bool
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1


def _peer(assoc: Association) -> str:
    return str(assoc.requestor.address or "")


def _is_tls(assoc: Association) -> bool:
    sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    return isinstance(sock, ssl.SSLSocket)


def _certificate_subject(sock: ssl.SSLSocket) -> str:
    subject = cast("tuple[tuple[tuple[str, str], ...], ...]", (sock.getpeercert() or {}).get("subject", ()))
    return ", ".join(f"{key}={value}" for rdn in subject for key, value in rdn)


def _any_nonempty_uid(value: Any) -> tuple[bool, str]:
    """pynetdicom's UID check for DIMSE fields, minus the 64-character limit (the store checks UIDs)."""
    return (True, "") if isinstance(value, str) and value else (False, "must not be empty")


def _offered_only_in_unsupported_syntaxes(assoc: Association) -> dict[str, str]:
    """SOP class -> the transfer syntax it was offered in, for the classes the node would store but whose
    every context was refused for its transfer syntaxes (pynetdicom keeps the first one proposed)."""
    accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
    return {str(cx.abstract_syntax): str(cx.transfer_syntax[0]) for cx in assoc.rejected_contexts
            if cx.result == _TRANSFER_SYNTAXES_NOT_SUPPORTED and cx.transfer_syntax
            and str(cx.abstract_syntax) not in accepted}


def tls_context(node: NodeSettings) -> ssl.SSLContext:
    """Server-side TLS: our certificate, and client certificates verified against the CA bundle if set."""
    tls = node.tls
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.certificate), str(tls.private_key))
    if tls.ca_certificates is not None:
        context.load_verify_locations(cafile=str(tls.ca_certificates))
        context.verify_mode = ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    return context


class _NodeServer(ThreadedAssociationServer):
    """pynetdicom's server, fed by `port_guard.ConnectionGate` instead of its own accept loop: a connection
    reaches pynetdicom (and gets its threads) only with a complete, decodable A-ASSOCIATE-RQ in hand."""

    request_queue_size = 128  # listen backlog; the gate accepts at once, so this only absorbs bursts
    pdu_timeout_s: float
    reporter: Closures

    def hand_over(self, sock: socket.socket, address: tuple[str, int], handover: Handover) -> None:
        """Start the association (in a thread of its own, as pynetdicom does)."""
        with self._handovers_lock:
            self._handovers[sock] = handover
        self.process_request(sock, address)

    def take_handover(self, sock: socket.socket) -> Handover:
        """What came with `sock` (GuardedRequestHandler hands its A-ASSOCIATE-RQ to the DUL)."""
        with self._handovers_lock:
            return self._handovers.pop(sock)

    def association_ended(self, assoc: AcceptorAssociation) -> None:
        self._on_ended(assoc)

    def prepare(self, node: NodeSettings, reporter: Closures,
                on_ended: Callable[[AcceptorAssociation], None]) -> None:
        self._handovers: dict[socket.socket, Handover] = {}
        self._handovers_lock = threading.Lock()
        self.pdu_timeout_s = node.pdu_timeout_s
        self.reporter = reporter
        self._on_ended = on_ended

    def shutdown(self) -> None:
        # The gate ran instead of serve_forever, so socketserver's shutdown (which waits for that loop)
        # does not apply; this server is not in the AE's own list that pynetdicom's shutdown edits either.
        self.server_close()


class _HandedOnlyServer(_NodeServer):
    """The server of a receiving process: it never listens (the gate in `serve` does), it is only handed
    connections; its address stays the node's, which pynetdicom reports as the acceptor's."""

    def server_bind(self) -> None:
        pass

    def server_activate(self) -> None:
        pass


class Receiver:
    """The node's DICOM listener; `start()` returns at once, associations run in their own threads."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.store = InstanceStore(settings, sessions)
        self.port = settings.node.port
        self._ae: AE | None = None
        self._server: _NodeServer | None = None
        self._gate: ConnectionGate | None = None
        self._reporter: Closures | None = None
        self._states: weakref.WeakKeyDictionary[Association, _AssociationState] = weakref.WeakKeyDictionary()
        self._states_lock = threading.Lock()
        # Told when an association ends (every one, also those rejected): assembly queues a proven study at
        # once when its sender has released; a receiving process reports it to `serve` (which sets these).
        self.on_association_ended: Callable[[AssociationEnd], None] | None = None
        # Told (hand-over id, study row id) when an association delivers the first instance of a study.
        self.on_delivering: Callable[[int, int], None] | None = None

    def studies_in_transfer(self) -> set[int]:
        """Row ids of the studies that open associations have delivered instances of."""
        with self._states_lock:
            return {study_id for state in self._states.values()
                    for study_id in state.caller.study_ids.values()}

    # ------------------------------------------------------------------------------------------ lifecycle

    def _make_ae(self) -> AE:
        node = self.settings.node
        ae = AE(ae_title=node.ae_title)
        # Limits are enforced (and audited) by the gate and _on_requested. pynetdicom's own ceiling counts
        # every acceptor thread, even those being rejected or closing, and rejects without telling anyone:
        # set out of reach so it never turns a real sender away.
        ae.maximum_associations = 1_000_000
        ae.maximum_pdu_size = node.max_pdu_bytes
        ae.network_timeout = node.network_timeout_s
        ae.acse_timeout = node.acse_timeout_s
        ae.dimse_timeout = node.network_timeout_s
        # Calling/called AE checks happen in _on_requested, which audits them.
        ae.require_calling_aet = []
        ae.require_called_aet = False
        ae.add_supported_context(Verification)
        classes = list(PET_CT_SOP_CLASSES)
        if node.other_storage_classes == "store":
            classes += [cast(str, cx.abstract_syntax) for cx in AllStoragePresentationContexts
                        if cx.abstract_syntax not in PET_CT_SOP_CLASSES]
        for uid in classes:
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        return ae

    def start(self, hand_over: HandOver | None = None) -> None:
        """Listen (non-blocking). The associations run in this process's threads, or, given `hand_over`,
        wherever it passes the gate's connections on (receiving processes)."""
        node = self.settings.node
        tls = tls_context(node) if node.tls.enabled else None
        reporter = ClosureReporter(node.connection_report_seconds, self._audit)
        server = self._make_server((node.bind, node.port), _NodeServer, reporter)
        self.port = int(server.server_address[1])
        assert server.socket is not None
        self._gate = ConnectionGate(server.socket, node, tls, hand_over or self._hand_over_here, reporter)
        self._gate.start()
        log.info("DICOM listener started", extra={"ae_title": node.ae_title, "bind": node.bind,
                                                   "port": self.port, "tls": node.tls.enabled})

    def start_handed_only(self, closures: Closures) -> None:
        """Serve connections handed over by `take` (a receiving process), listening on nothing; closed
        and refused connections are reported to `closures`."""
        node = self.settings.node
        self._make_server((node.bind, node.port), _HandedOnlyServer, closures)

    def connection_closed(self, *args: Any, **detail: Any) -> None:
        """A closure a receiving process reported: logged and audited here, with the gate's own."""
        if self._reporter is not None:
            self._reporter.closed(*args, **detail)

    def take(self, sock: socket.socket, address: tuple[str, int], handover: Handover) -> None:
        """Run the association on a connection the gate handed over (in another process)."""
        assert self._server is not None
        self._server.hand_over(sock, address, handover)

    def _hand_over_here(self, sock: socket.socket, address: tuple[str, int], request: bytes) -> None:
        assert self._server is not None
        self._server.hand_over(sock, address, Handover(request))

    def _make_server(self, address: tuple[str, int], server_class: type[_NodeServer],
                     reporter: Closures) -> _NodeServer:
        node = self.settings.node
        # pynetdicom's "standard" handlers format a multi-line log text for every PDU and DIMSE message
        # (copying each data set once more to test whether it is empty), and the node drops it: its
        # pynetdicom logger never goes below WARNING (log.py). Bound per association, so set before any.
        pynetdicom_config.LOG_HANDLER_LEVEL = "none"
        # A UID longer than 64 characters in a DIMSE command made pynetdicom drop the association with a
        # traceback; accepted here, the C-STORE handler refuses it with a status and an audit row.
        pynetdicom_config.VALIDATORS["UI"] = _any_nonempty_uid
        install_log_filters()
        self._ae = self._make_ae()
        handlers: list[evt.EventHandlerType] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_CONN_CLOSE, self._on_closed),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
        ]
        server = cast(_NodeServer, self._ae.make_server(address, evt_handlers=handlers, server_class=server_class,
                                                        request_handler=GuardedRequestHandler))
        self._reporter = reporter
        server.prepare(node, reporter, self._ended)
        self._server = server
        return server

    def stop(self) -> None:
        """Stop listening and abort open associations (their unanswered instances are resent by peers)."""
        if self._ae is not None:
            for assoc in self._ae.active_associations:
                assoc.abort()
        if self._gate is not None:
            self._gate.stop()
        if self._server is not None:
            self._server.shutdown()
        if self._reporter is not None:
            self._reporter.close()
        self.store.close()
        if self._gate is not None:
            log.info("DICOM listener stopped", extra={"port": self.port})

    # ------------------------------------------------------------------------------------------ association

    def _audit(self, category: str, action: str, **fields: Any) -> None:
        """Audit rows outside an instance's transaction; a failing database must not kill the thread."""
        try:
            with self.sessions.begin() as session:
                audit.record(session, category, action, **fields)
        except Exception:
            log.exception("cannot write audit event", extra={"category": category, "action": action})

    def _refusal(self, assoc: Association) -> tuple[tuple[int, int, int], str] | None:
        assert assoc.requestor.primitive is not None  # set from the A-ASSOCIATE-RQ before EVT_REQUESTED
        calling = assoc.requestor.primitive.calling_ae_title.strip()
        called = assoc.requestor.primitive.called_ae_title.strip()
        found = refusal(self.settings.node, calling, called, _peer(assoc),
                        self._held(cast(AcceptorAssociation, assoc), calling))
        return None if found is None else (_REJECTIONS[found.kind], found.reason)

    def _held(self, assoc: AcceptorAssociation, calling: str) -> Held:
        """Associations open before this one (whose calling AE title is `calling`: pynetdicom sets it on the
        association only once negotiating). In a receiving process, as the gate counted them over every
        process when it handed the connection over."""
        if assoc.handover.held is not None:
            return assoc.handover.held
        assert self._ae is not None
        node = self.settings.node
        # Established ones only: bare TCP connections (port probes, load balancer checks) do not count.
        established = [(_peer(a), a.requestor.ae_title.strip()) for a in self._ae.active_associations
                       if a.is_acceptor and a.is_established]
        return Held.among(((peer, title, admit(node, title, peer).bound) for peer, title in established),
                          _peer(assoc), calling)

    def _on_requested(self, event: Event) -> None:
        assoc = event.assoc
        refusal = self._refusal(assoc)
        if refusal is None:
            return
        (result, source, diagnostic), reason = refusal
        assert assoc.requestor.primitive is not None  # set from the A-ASSOCIATE-RQ before EVT_REQUESTED
        calling = assoc.requestor.primitive.calling_ae_title.strip()
        peer = _peer(assoc)
        # Once per source and reason and interval: a retry storm (or a flood of requests) is one summary.
        assert self._reporter is not None
        self._reporter.closed(peer, "rejected", reason, action="rejected", event="association rejected",
                              per_reason=True, actor=calling,
                              called_ae=assoc.requestor.primitive.called_ae_title.strip(), tls=_is_tls(assoc))
        assoc.acse.send_reject(result, source, diagnostic)
        assoc.kill()

    def _on_accepted(self, event: Event) -> None:
        assoc = event.assoc
        caller = Caller(ae_title=assoc.requestor.ae_title.strip(), host=_peer(assoc))
        tls = _is_tls(assoc)
        with self._states_lock:
            self._states[assoc] = _AssociationState(caller=caller, tls=tls)
        refused_classes = sorted({str(cx.abstract_syntax) for cx in assoc.rejected_contexts})
        detail: dict[str, Any] = {"tls": tls, "called_ae": assoc.acceptor.ae_title.strip(),
                                  "accepted_contexts": len(assoc.accepted_contexts)}
        if tls:
            assert assoc.dul.socket is not None  # _is_tls found an SSL socket there
            detail["peer_certificate"] = _certificate_subject(cast(ssl.SSLSocket, assoc.dul.socket.socket))
        if refused_classes:
            detail["refused_sop_classes"] = refused_classes
        log.info("association accepted", extra={"calling_ae": caller.ae_title, "peer": caller.host,
                                                 "tls": tls, "refused_contexts": len(refused_classes)})
        unsupported = _offered_only_in_unsupported_syntaxes(assoc)
        if unsupported:
            # The sender cannot send these at all: without this its instances would vanish unexplained.
            detail["unsupported_transfer_syntaxes"] = unsupported
            log.warning("storage classes offered only in transfer syntaxes the node does not accept",
                        extra={"calling_ae": caller.ae_title, "peer": caller.host,
                               "offered": "; ".join(f"{UID(c).name} in {UID(t).name} ({t})"
                                                    for c, t in unsupported.items())})
        self._audit("association", "accepted", actor=caller.ae_title, peer=caller.host, **detail)

    def _on_closed(self, event: Event) -> None:
        with self._states_lock:
            state = self._states.get(event.assoc)
        if state is None:
            return
        how = "released" if event.assoc.is_released else "aborted" if event.assoc.is_aborted else "closed"
        log.info("association closed", extra={"calling_ae": state.caller.ae_title, "peer": state.caller.host,
                                               "how": how, **{f"n_{k}": v for k, v in state.counts.items()}})
        self._audit("association", how, actor=state.caller.ae_title, peer=state.caller.host, tls=state.tls,
                    counts=state.counts)

    def _ended(self, assoc: AcceptorAssociation) -> None:
        """The association's thread ends (after its closing audit row): report it, with its studies."""
        with self._states_lock:
            state = self._states.pop(assoc, None)
        if self.on_association_ended is None:
            return
        studies = frozenset(state.caller.study_ids.values()) if state is not None else frozenset()
        try:
            self.on_association_ended(AssociationEnd(assoc.handover.id, studies, bool(assoc.is_released)))
        except Exception:  # a failing report must not keep the association's thread from ending
            log.exception("cannot report an ended association")

    def _state(self, assoc: Association) -> _AssociationState:
        with self._states_lock:
            state = self._states.get(assoc)
            if state is None:
                state = self._states[assoc] = _AssociationState(
                    caller=Caller(ae_title=assoc.requestor.ae_title.strip(), host=_peer(assoc)),
                    tls=_is_tls(assoc))
            return state

    # ------------------------------------------------------------------------------------------ services

    def _on_echo(self, event: Event) -> int:
        return STATUS_SUCCESS

    def _on_store(self, event: Event) -> int:
        request = cast(C_STORE, event.request)
        state = self._state(event.assoc)
        requested_instance = str(request.AffectedSOPInstanceUID or "")
        studies_before = set(state.caller.study_ids.values())
        with cast(BytesIO, request.DataSet).getbuffer() as received:
            delivery = Delivery(sop_class_uid=str(request.AffectedSOPClassUID or ""),
                                sop_instance_uid=requested_instance,
                                context_sop_class_uid=str(event.context.abstract_syntax),
                                transfer_syntax_uid=str(event.context.transfer_syntax), dataset=received)
            outcome = self.store.receive(delivery, state.caller)
        if self.on_delivering is not None and len(state.caller.study_ids) > len(studies_before):
            for study_id in set(state.caller.study_ids.values()) - studies_before:
                self.on_delivering(cast(AcceptorAssociation, event.assoc).handover.id, study_id)
        if outcome.kind == "refused":
            return self._refuse(state, requested_instance, outcome.status, outcome.reason or "")
        state.count(outcome.kind)
        if outcome.kind != "stored" and outcome.instance is not None:
            log.info("instance " + outcome.kind, extra={
                "sop_instance_uid": outcome.instance.sop_instance_uid,
                "study_uid": outcome.instance.study_uid,
                "revision": outcome.revision, "calling_ae": state.caller.ae_title})
        return outcome.status

    def _refuse(self, state: _AssociationState, sop_instance_uid: str, status: int, reason: str) -> int:
        state.count("refused")
        log.warning("instance refused", extra={
            "sop_instance_uid": sop_instance_uid, "status": f"0x{status:04X}", "reason": reason,
            "calling_ae": state.caller.ae_title, "peer": state.caller.host})
        self._audit("instance", "refused", outcome="refused", reason=clean_text(reason),
                    sop_instance_uid=clean_text(sop_instance_uid)[:64] or None, actor=state.caller.ae_title,
                    peer=state.caller.host, status=f"0x{status:04X}")
        return status
