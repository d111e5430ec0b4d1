"""Delivery of result objects to PACS: the scheduled sender working through the durable outbox.

Each tick of the `Sender` (one per node, owned by `serve`) puts interrupted attempts back in the queue, then
starts one sender thread per destination that has due objects and is not already being served, so a dead or
slow PACS never holds up another one. A destination whose association fails is held back (exponential
back-off with jitter, kept by the sender and pushed onto its pending rows) until its next attempt time.
DIMSE peers get C-STORE over one association per batch, with TCP_NODELAY (Nagle plus delayed ACK costs
~40 ms per round trip on loopback), a Comprehensive SR (88.33) copy when the peer refuses Comprehensive 3D
SR (88.34) and the configuration allows it, and an optional C-FIND at IMAGE level to confirm the peer can
find what it acknowledged. DICOMweb peers get STOW-RS (and QIDO-RS for the confirmation). Every attempt
is audited.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import cast

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, SegmentationStorage
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]
from pynetdicom.status import code_to_category
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import audit
from db.clock import utcnow
from db.models import OutboxItem, Study
from db.session import transaction
from dicom_node import outbox
from dicom_node.association import destination_tls, keep_responses_for_sender, set_tcp_nodelay
from dicom_node.config import Destination, Settings
from dicom_node.report.sr import COMPREHENSIVE_3D_SR, COMPREHENSIVE_SR, as_comprehensive

log = logging.getLogger(__name__)

UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
STORE_WARNINGS = {0xB000, 0xB006, 0xB007}
CONNECT_TIMEOUT_S = 10.0
CONFIRM_PAUSES_S = (0.2, 0.5, 1.0)  # before asking again for an acknowledged object the peer cannot find
NO_MATCH = "C-FIND found no match"
QIDO_NO_MATCH = "QIDO-RS found no match"
SEGMENTATION = SegmentationStorage


@dataclass(frozen=True)
class Peer:
    """A resolved destination: a configured one, or the sender of a study for 'return to sender'."""

    name: str
    config: Destination

    @property
    def label(self) -> str:
        c = self.config
        return c.url or f"{c.ae_title}@{c.host}:{c.port}"


@dataclass
class Item:
    """What the sender needs of an outbox row, detached from its session."""

    id: int
    path: str
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    attempts: int


@dataclass
class Outcome:
    item: Item
    ok: bool
    status: str
    reason: str = ""
    sent_as: str = ""
    fallback: bool = False
    peer_level: bool = False  # the destination itself failed (connection, association), not this object
    confirmed: bool | None = None
    confirm_detail: str = ""


class Sender:
    """Delivers the outbox: one thread per destination at a time, and each destination's back-off.

    The back-off lives only here (a restart, i.e. a new Sender, forgets it; the rows keep their next attempt
    time), so whoever builds a Sender owns that memory: `serve` for the node, each test for itself.
    """

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        # destination -> (held until, consecutive failures)
        self._holds: dict[str, tuple[dt.datetime, int]] = {}

    def tick(self, wait: bool = False) -> None:
        """Attempt due outbox items: one thread per destination; `wait` joins them (tests, CLI)."""
        now = utcnow()
        with transaction(self.sessions) as session:
            outbox.recover_interrupted(session, now)
            names = outbox.due_destinations(session, now)
        started: list[threading.Thread] = []
        with self._lock:
            for name in names:
                running = self._threads.get(name)
                if running is not None and running.is_alive():
                    continue
                hold = self._holds.get(name)
                if hold is not None and hold[0] > now:
                    continue
                thread = threading.Thread(target=self._deliver, args=(name,), name=f"send-{name}",
                                          daemon=True)
                self._threads[name] = thread
                thread.start()
                started.append(thread)
        if wait:
            for thread in started:
                thread.join()

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Join sender threads still running (orderly shutdown, tests)."""
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)

    def _deliver(self, name: str) -> None:
        try:
            # Batch after batch while they go through: what was published during a batch goes right after
            # it, not at the next tick (this thread holds the destination, so a tick would skip it).
            while self._deliver_destination(name):
                pass
        except Exception:  # a bug here must not kill the scheduler thread; the rows' leases bring them back
            log.exception("sender failed", extra={"destination": name})

    def _deliver_destination(self, name: str) -> bool:
        """One batch to one destination; True if there was one and every object of it was accepted."""
        settings, results = self.settings, self.settings.results
        now = utcnow()
        with transaction(self.sessions) as session:
            ids = outbox.claim(session, name, now, results.sending_timeout_seconds,
                               results.max_items_per_association)
            if not ids:
                return False
            rows = session.execute(
                select(OutboxItem).where(OutboxItem.id.in_(ids)).order_by(OutboxItem.id)
            ).scalars()
            items = [Item(r.id, r.path, r.sop_class_uid, r.sop_instance_uid, r.study_uid, r.attempts)
                     for r in rows]
            groups = _resolve(session, settings, name, items)
        outcomes: list[Outcome] = []
        for peer, group in groups:
            if isinstance(peer, str):
                outcomes += [Outcome(item, False, "not-sent", reason=peer, peer_level=True) for item in group]
            elif peer.config.kind == "stow":
                outcomes += _send_stow(peer, group)
            else:
                outcomes += _send_dimse(settings, peer, group)
        _record(settings, self.sessions, name, outcomes)
        self._hold_or_release(name, outcomes)
        return bool(outcomes) and all(outcome.ok for outcome in outcomes)

    def _hold_or_release(self, name: str, outcomes: list[Outcome]) -> None:
        """Hold back a destination that failed as a whole (longer each time); release it once one succeeds."""
        until: dt.datetime | None = None
        with self._lock:
            if any(o.peer_level for o in outcomes):
                failures = self._holds.get(name, (utcnow(), 0))[1] + 1
                delay = outbox.retry_delay(failures, self.settings.results.retry)
                until = utcnow() + dt.timedelta(seconds=delay)
                self._holds[name] = (until, failures)
            elif any(o.ok for o in outcomes):
                self._holds.pop(name, None)
        if until is not None:
            with transaction(self.sessions) as session:
                outbox.hold_destination(session, name, until)


def _resolve(session: Session, settings: Settings, name: str,
             items: list[Item]) -> list[tuple[Peer | str, list[Item]]]:
    """Group claimed items by the peer they go to; a string instead of a peer is why they cannot go."""
    for destination in settings.results.destinations:
        if destination.name == name:
            return [(Peer(name, destination), items)]
    if not name.startswith(outbox.SENDER_PREFIX):
        return [(f"destination {name!r} is not in results.destinations (removed from the configuration?)",
                 items)]
    ae_title = name[len(outbox.SENDER_PREFIX):]
    port = next((p.port for p in settings.node.allowed_calling_aes if p.ae_title == ae_title and p.port), None)
    if port is None:
        return [(f"return to sender: AE {ae_title!r} has no port in node.allowed_calling_aes", items)]
    groups: dict[str, list[Item]] = {}
    for item in items:
        host = session.scalar(select(Study.calling_host).where(Study.study_uid == item.study_uid)) or ""
        groups.setdefault(host, []).append(item)
    resolved: list[tuple[Peer | str, list[Item]]] = []
    for host, group in groups.items():
        if not host:
            resolved.append((f"return to sender: address of AE {ae_title!r} unknown for this study", group))
        else:
            config = Destination(name=name, kind="dicom", ae_title=ae_title, host=host, port=port)
            resolved.append((Peer(name, config), group))
    return resolved


def _tls_args(config: Destination) -> tuple[ssl.SSLContext, str] | None:
    context = destination_tls(config)
    return None if context is None else (context, config.host or "")


def _read(item: Item) -> Dataset | Outcome:
    try:
        return dcmread(item.path)
    except (OSError, ValueError) as exc:
        return Outcome(item, False, "not-sent", reason=f"cannot read result file {item.path}: {exc}")


def _association_failure(assoc: Association, response: object, peer: Peer) -> str:
    if assoc.is_rejected and response is not None:
        result = getattr(response, "result_str", "rejected")
        source = getattr(response, "source_str", "")
        reason = getattr(response, "reason_str", "")
        return f"association rejected by {peer.label}: {result}, {source}: {reason}"
    if assoc.rejected_contexts and not assoc.accepted_contexts:
        refused = ", ".join(
            sorted({str(cast(UID, cx.abstract_syntax).name) for cx in assoc.rejected_contexts})
        )
        return f"{peer.label} accepted none of the presentation contexts offered (refused: {refused})"
    return f"no association with {peer.label}: {_diagnose_connection(peer.config)}"


def _diagnose_connection(config: Destination) -> str:
    """Why no association came about, found by connecting once more ourselves: pynetdicom only logs it."""
    try:
        sock = socket.create_connection((config.host or "", int(config.port or 0)), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        return f"cannot connect ({exc.strerror or exc})"
    with sock:
        context = destination_tls(config)
        if context is None:
            return "the peer closed or aborted the connection before answering"
        try:
            context.wrap_socket(sock, server_hostname=config.host).close()  # the handshake happens here
        except (ssl.SSLError, OSError) as exc:
            detail = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or str(exc)
            return f"TLS handshake failed: {detail} (check ca_certificates and the client certificate)"
    return "the peer closed or aborted the association before answering"


def _send_dimse(settings: Settings, peer: Peer, items: list[Item]) -> list[Outcome]:
    config = peer.config
    fallback = settings.results.fallback_to_comprehensive
    outcomes: list[Outcome] = []
    datasets: list[tuple[Item, Dataset]] = []
    for item in items:
        read = _read(item)
        if isinstance(read, Outcome):
            outcomes.append(read)
        else:
            datasets.append((item, read))
    if not datasets:
        return outcomes
    ae = AE(ae_title=settings.node.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = settings.node.network_timeout_s
    ae.connection_timeout = min(CONNECT_TIMEOUT_S, settings.node.network_timeout_s)
    classes = {str(ds.SOPClassUID) for _, ds in datasets}
    if COMPREHENSIVE_3D_SR in classes and fallback:
        classes.add(COMPREHENSIVE_SR)
    for sop_class in sorted(classes):
        ae.add_requested_context(sop_class, UNCOMPRESSED)
    if config.confirm_with_cfind:
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    response: dict[str, object] = {}

    def remember(event: evt.Event) -> None:
        primitive = getattr(event, "primitive", None)
        if getattr(primitive, "result", None) is not None:
            response.setdefault("rsp", primitive)

    handlers: list[evt.EventHandlerType] = [
        (evt.EVT_CONN_OPEN, set_tcp_nodelay), (evt.EVT_ACSE_RECV, remember)
    ]
    assert config.host is not None  # Destination requires host, port and AE title for kind dicom
    try:
        assoc = ae.associate(config.host, int(config.port or 0), ae_title=config.ae_title or "",
                             evt_handlers=handlers, tls_args=_tls_args(config))
    except (OSError, RuntimeError, ValueError) as exc:
        reason = f"no association with {peer.label}: {exc}"
        return outcomes + [Outcome(item, False, "no-association", reason=reason, peer_level=True)
                           for item, _ in datasets]
    if not assoc.is_established:
        reason = _association_failure(assoc, response.get("rsp"), peer)
        return outcomes + [Outcome(item, False, "no-association", reason=reason, peer_level=True)
                           for item, _ in datasets]
    keep_responses_for_sender(assoc)
    try:
        stored: list[tuple[Outcome, Dataset]] = []
        for item, ds in datasets:
            outcome = _store(assoc, peer, item, ds, fallback)
            outcomes.append(outcome)
            if outcome.ok:
                stored.append((outcome, ds))
        if config.confirm_with_cfind:
            _confirm(stored, partial(_find, assoc), NO_MATCH, lambda: assoc.is_established)
    finally:
        if assoc.is_established:
            assoc.release()
    return outcomes


def _accepted(assoc: Association, sop_class: str) -> bool:
    return any(cx.abstract_syntax == sop_class for cx in assoc.accepted_contexts)


def _store(assoc: Association, peer: Peer, item: Item, ds: Dataset, fallback: bool) -> Outcome:
    sop_class = str(ds.SOPClassUID)
    sent = ds
    used_fallback = False
    if not _accepted(assoc, sop_class):
        if sop_class == COMPREHENSIVE_3D_SR and fallback and _accepted(assoc, COMPREHENSIVE_SR):
            sent, used_fallback = as_comprehensive(ds), True
        else:
            hints: dict[str, str] = {
                COMPREHENSIVE_3D_SR: "; results.fallback_to_comprehensive is off",
                SEGMENTATION: "; set results.seg_enabled to false if this PACS cannot store segmentations"}
            hint = hints.get(sop_class, "")
            return Outcome(item, False, "context-rejected",
                           reason=f"{peer.label} refused the presentation context for {sop_class}{hint}")
    if not assoc.is_established:
        return Outcome(item, False, "aborted", reason=f"association with {peer.label} ended early",
                       peer_level=True)
    try:
        status = assoc.send_c_store(sent)
    except (RuntimeError, ValueError, OSError) as exc:
        return Outcome(item, False, "error", reason=f"C-STORE to {peer.label} failed: {exc}", peer_level=True)
    if "Status" not in status:
        return Outcome(item, False, "no-response",
                       reason=f"no C-STORE response from {peer.label} (timeout or abort)", peer_level=True)
    code = int(status.Status)
    text = f"0x{code:04X}"
    if code == 0 or code in STORE_WARNINGS:
        return Outcome(item, True, text, sent_as=str(sent.SOPClassUID), fallback=used_fallback)
    comment = str(status.get("ErrorComment", "") or "")
    return Outcome(item, False, text, reason=f"C-STORE to {peer.label} answered {text} "
                   f"({code_to_category(code)}){': ' + comment if comment else ''}")


def _confirm(stored: list[tuple[Outcome, Dataset]], find: Callable[[Dataset], tuple[bool, str]],
             no_match: str, reachable: Callable[[], bool] = lambda: True) -> None:
    """Ask the peer (C-FIND or QIDO-RS, `find`) for every object it acknowledged, and ask again for those it
    answers `no_match` for, after short pauses: a PACS may index an object a moment after acknowledging it."""
    waiting = stored
    for queries, pause in enumerate((0.0, *CONFIRM_PAUSES_S), start=1):
        time.sleep(pause)
        for outcome, ds in waiting:
            outcome.confirmed, outcome.confirm_detail = find(ds)
        waiting = [(outcome, ds) for outcome, ds in waiting if outcome.confirm_detail == no_match]
        if not waiting or not reachable():
            break
    for outcome, _ in waiting:
        outcome.confirm_detail = (f"{no_match} in {queries} queries over "
                                  f"{sum(CONFIRM_PAUSES_S[:queries - 1]):.1f} s")


def _find(assoc: Association, ds: Dataset) -> tuple[bool, str]:
    """C-FIND at IMAGE level by SOP Instance UID: can the peer find what it acknowledged?"""
    if not _accepted(assoc, StudyRootQueryRetrieveInformationModelFind) or not assoc.is_established:
        return False, "peer did not accept Study Root C-FIND"
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.StudyInstanceUID = ds.StudyInstanceUID
    query.SeriesInstanceUID = ds.SeriesInstanceUID
    query.SOPInstanceUID = ds.SOPInstanceUID
    found = False
    last = NO_MATCH
    for status, identifier in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind):
        if "Status" not in status:
            return False, "no C-FIND response"
        if status.Status in (0xFF00, 0xFF01) and identifier is not None:
            found = found or identifier.get("SOPInstanceUID") == ds.SOPInstanceUID
        elif status.Status != 0:
            last = f"C-FIND status 0x{int(status.Status):04X}"
    return found, "C-FIND IMAGE level" if found else last


def _send_stow(peer: Peer, items: list[Item]) -> list[Outcome]:
    config = peer.config
    http = requests.Session()
    if config.username:
        http.auth = (config.username, config.password.get_secret_value() if config.password else "")
    client = DICOMwebClient(url=config.url or "", session=http)
    outcomes: list[Outcome] = []
    stored: list[tuple[Outcome, Dataset]] = []
    for item in items:
        read = _read(item)
        if isinstance(read, Outcome):
            outcomes.append(read)
            continue
        try:
            response = client.store_instances([read])
        except requests.ConnectionError as exc:
            outcomes.append(Outcome(item, False, "no-connection", reason=f"STOW-RS to {peer.label}: {exc}",
                                    peer_level=True))
            continue
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else 0
            outcomes.append(Outcome(item, False, f"HTTP {code}", reason=f"STOW-RS to {peer.label} failed: {exc}",
                                    peer_level=code in (401, 403, 404) or code >= 500))
            continue
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            reason = ", ".join(f"0x{int(f.get('FailureReason', 0)):04X}" for f in failed)
            outcomes.append(Outcome(item, False, "failed", reason=f"STOW-RS to {peer.label}: failure {reason}"))
            continue
        outcome = Outcome(item, True, "HTTP 200", sent_as=str(read.SOPClassUID))
        outcomes.append(outcome)
        stored.append((outcome, read))
    if config.confirm_with_cfind:
        _confirm(stored, partial(_search, client), QIDO_NO_MATCH)
    return outcomes


def _search(client: DICOMwebClient, ds: Dataset) -> tuple[bool, str]:
    """QIDO-RS for one instance: can the DICOMweb peer find what it acknowledged?"""
    try:
        matches = client.search_for_instances(study_instance_uid=ds.StudyInstanceUID,
                                              search_filters={"SOPInstanceUID": ds.SOPInstanceUID})
    except requests.RequestException as exc:
        return False, f"QIDO-RS failed: {exc}"
    return (True, "QIDO-RS") if matches else (False, QIDO_NO_MATCH)


def _record(settings: Settings, sessions: sessionmaker[Session], name: str, outcomes: list[Outcome]) -> None:
    """Write each outcome in its own short transaction."""
    retry = settings.results.retry
    for outcome in outcomes:
        item = outcome.item
        with transaction(sessions) as session:
            if outcome.ok:
                outbox.mark_delivered(session, item.id, sent_as=outcome.sent_as, peer=name, status=outcome.status)
                if outcome.fallback:
                    audit.record(session, "delivery", "sop-class-fallback", outcome="warning",
                                 reason=f"{name} refused Comprehensive 3D SR (88.34); sent as Comprehensive "
                                        "SR (88.33) with the same content",
                                 study_uid=item.study_uid, sop_instance_uid=item.sop_instance_uid, peer=name,
                                 outbox_id=item.id)
                if outcome.confirmed is not None:
                    outbox.mark_confirmed(session, item.id, peer=name, found=outcome.confirmed,
                                          detail=outcome.confirm_detail)
            else:
                outbox.mark_failed_attempt(session, item.id, reason=outcome.reason, peer=name,
                                           status=outcome.status, retry=retry)
        if outcome.confirmed is False:
            log.warning("delivered but not confirmed", extra={
                "destination": name, "sop_instance_uid": item.sop_instance_uid, "reason": outcome.confirm_detail})
        log.log(logging.INFO if outcome.ok else logging.WARNING,
                "delivery attempt", extra={"destination": name, "sop_instance_uid": item.sop_instance_uid,
                                           "attempt": item.attempts, "status": outcome.status,
                                           "reason": outcome.reason, "fallback": outcome.fallback})
