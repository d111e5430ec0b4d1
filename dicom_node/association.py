"""What every pynetdicom service user of the node (results sender, doctor, synth --send) needs for an
association: TLS towards a destination, and two workarounds for how pynetdicom behaves on fast links.

`keep_responses_for_sender` replaces a private method of pynetdicom's Association (`_serve_request`) and
relies on its reactor checkpoint; it was tested with pynetdicom 3.0.4, which pyproject.toml pins
(`>=3.0.4,<3.1`) together with the receiving side's patches (port_guard.py). It can go once pynetdicom's
requestor reactor no longer takes DIMSE responses meant for a waiting `send_c_*` call; re-check on upgrade
(tests/dicom_node/send exercises it).
"""

from __future__ import annotations

import logging
import socket
import ssl

from pynetdicom import Association
from pynetdicom.dimse_primitives import DimseServiceType
from pynetdicom.events import Event

from dicom_node.config import Destination

log = logging.getLogger(__name__)


def destination_tls(destination: Destination) -> ssl.SSLContext | None:
    """The TLS client context for a destination: its CA verifies the peer, its certificate answers a peer
    that requires one; None for plain TCP."""
    if not destination.tls:
        return None
    cafile = str(destination.ca_certificates) if destination.ca_certificates else None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    if destination.client_certificate is not None:
        key = str(destination.client_private_key) if destination.client_private_key else None
        context.load_cert_chain(str(destination.client_certificate), key)
    return context


def set_tcp_nodelay(event: Event) -> None:
    """EVT_CONN_OPEN handler: without TCP_NODELAY, Nagle plus delayed ACK cost ~40 ms per DIMSE round trip."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def keep_responses_for_sender(assoc: Association) -> None:
    """Hand DIMSE responses that pynetdicom's reactor grabbed back to the waiting `send_c_*` call.

    pynetdicom's requestor reactor can take a response off the DIMSE queue in the instant between
    `send_c_store`/`send_c_find` pausing it and waiting for the answer (likelier with TCP_NODELAY's fast
    replies); it then logs "Received unexpected ... service message" and the sender waits out the DIMSE
    timeout. Our service users serve nothing, so whatever the reactor picks up is a response: put it back.
    """

    def requeue(message: DimseServiceType, context_id: int) -> None:
        if message.is_valid_request:
            log.warning("peer sent a DIMSE request to a service user; ignored", extra={"dimse": message.msg_type})
            return
        log.debug("DIMSE response handed back to the sender", extra={"dimse": message.msg_type})
        assoc.dimse.msg_queue.put((context_id, message))

    assoc._serve_request = requeue  # type: ignore[method-assign, assignment]
