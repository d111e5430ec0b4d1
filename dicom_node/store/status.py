"""C-STORE statuses, and the refusal that carries one with the reason the audit row keeps.

Its own module because every step of storing (encoding checks, header parsing, the store itself) refuses
with it, and none of them should import another just for the exception.
"""

from __future__ import annotations

STATUS_SUCCESS = 0x0000
# Failure statuses (PS3.4 B.2.3, PS3.7 C.4.2.1.4): the 0110 / A7xx / A9xx / Cxxx classes, with a sub-code per
# kind of problem so a sender's log says which; the audit row and the node's log give the full reason.
STATUS_PROCESSING_FAILURE = 0x0110  # the node's own fault (storage or database error): worth a re-send
STATUS_OUT_OF_RESOURCES = 0xA700  # instance too large, or the disk too full
# Identifiers missing, invalid or contradicting the request; no pixel data; a layout the IOD forbids.
STATUS_NOT_THE_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000  # unparseable or truncated data set
STATUS_WRONG_ENCODING = 0xC001  # encoded otherwise than the negotiated transfer syntax says
STATUS_PIXEL_DATA_MISMATCH = 0xC002  # pixel data empty, or its length does not match its description


class InstanceRefused(Exception):
    """An instance the node will not store; `status` is the C-STORE status, the message the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
