"""Association-level fixes every pynetdicom service user of the node needs (results sender, synth --send).

Kept in one place because both are workarounds for how pynetdicom behaves on fast links, not behaviour of
any one stage.
"""

from __future__ import annotations

import logging
import socket

from pynetdicom import Association
from pynetdicom.dimse_primitives import DimseServiceType
from pynetdicom.events import Event

log = logging.getLogger(__name__)


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

    assoc._serve_request = requeue  # type: ignore[method-assign]
