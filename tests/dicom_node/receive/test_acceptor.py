"""The acceptor's short way of answering C-STORE: the same bytes pynetdicom's own encoder writes."""

from __future__ import annotations

import pytest
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode

from dicom_node.acceptor import store_response
from tests.dicom_node.receive.clients import lenient_uids


def _response(sop_class: str, sop_instance: str, status: int, message_id: int) -> C_STORE:
    response = C_STORE()
    response.MessageIDBeingRespondedTo = message_id
    response.AffectedSOPClassUID = sop_class
    response.AffectedSOPInstanceUID = sop_instance
    response.Status = status
    return response


def _pynetdicom_bytes(response: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(response)
    return bytes(encode(message.command_set, True, True))


@pytest.mark.parametrize(("sop_instance", "status", "message_id"), [
    ("1.2.826.0.1.3680043.8.498.1", 0x0000, 1),            # odd length: padded
    ("1.2.826.0.1.3680043.8.498.12", 0xA900, 65535),       # even length
    ("1.2." + "3" * 198, 0xC001, 7),                       # the 202-character UID the node refuses
])
def test_store_response_is_byte_identical_to_pynetdicoms(sop_instance: str, status: int, message_id: int) -> None:
    with lenient_uids():  # as the node runs: overlong UIDs reach the handler, which refuses them
        response = _response("1.2.840.10008.5.1.4.1.1.128", sop_instance, status, message_id)
        assert store_response(response) == _pynetdicom_bytes(response)


def test_store_response_leaves_error_comments_to_pynetdicom() -> None:
    response = _response("1.2.840.10008.5.1.4.1.1.2", "1.2.3", 0xC211, 3)
    response.ErrorComment = "handler failed"
    assert store_response(response) is None
