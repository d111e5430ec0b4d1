"""A PACS that refuses Comprehensive 3D SR (88.34): the SR goes as Comprehensive SR (88.33) when allowed.

The PACS here is a real pynetdicom storage SCP that only supports Comprehensive SR and Secondary Capture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import ComprehensiveSRStorage, SecondaryCaptureImageStorage, Verification
from sqlalchemy import select

from db.models import AuditEvent, OutboxItem
from db.session import transaction
from dicom_node.report import publish_result
from dicom_node.report.sr import COMPREHENSIVE_3D_SR, COMPREHENSIVE_SR
from dicom_node.send import Sender
from tests.dicom_node.report.synthetic import make_analysis, make_pet_header, make_sessions, seed_study
from tests.support.settings import make_settings
from tests.support.node import free_port


@pytest.fixture
def legacy_pacs() -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """(port, received [(SOP Class UID, SOP Instance UID)]) of an SCP without 88.34."""
    received: list[tuple[str, str]] = []

    def on_store(event: evt.Event) -> int:
        ds = event.dataset
        received.append((str(ds.SOPClassUID), str(ds.SOPInstanceUID)))
        return 0x0000

    ae = AE(ae_title="LEGACY")
    for sop_class in (ComprehensiveSRStorage, SecondaryCaptureImageStorage, Verification):
        ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    yield port, received
    server.shutdown()


def _publish_and_send(tmp_path: Path, port: int, fallback: bool) -> tuple:
    db_url = f"sqlite:///{tmp_path / 'node.db'}"
    pacs = {"name": "legacy", "kind": "dicom", "ae_title": "LEGACY", "host": "127.0.0.1", "port": port}
    settings = make_settings(tmp_path, db_url, destinations=[pacs], fallback_to_comprehensive=fallback)
    sessions = make_sessions(db_url)
    pet = make_pet_header()
    with transaction(sessions) as session:
        study, result = seed_study(session, pet)
        publish_result(session, settings, study, result, make_analysis(), pet)
        sr_uid = result.sr_sop_instance_uid
    Sender(settings, sessions).tick(wait=True)
    with transaction(sessions) as session:
        rows = list(session.execute(select(OutboxItem)).scalars())
        events = list(session.execute(select(AuditEvent).where(AuditEvent.category == "delivery")).scalars())
    return sr_uid, rows, events


def test_sr_is_sent_as_comprehensive_sr_when_the_pacs_refuses_3d(tmp_path: Path, legacy_pacs) -> None:
    port, received = legacy_pacs
    sr_uid, rows, events = _publish_and_send(tmp_path, port, fallback=True)
    assert {r.state for r in rows} == {"delivered"}
    sr_row = next(r for r in rows if r.sop_instance_uid == sr_uid)
    assert sr_row.sop_class_uid == COMPREHENSIVE_3D_SR and sr_row.sent_as_sop_class_uid == COMPREHENSIVE_SR
    assert (COMPREHENSIVE_SR, sr_uid) in received and len(received) == len(rows)
    fallback = [e for e in events if e.action == "sop-class-fallback"]
    assert len(fallback) == 1 and fallback[0].sop_instance_uid == sr_uid and "88.33" in (fallback[0].reason or "")


def test_without_fallback_the_refused_sr_fails_with_a_clear_reason(tmp_path: Path, legacy_pacs) -> None:
    port, received = legacy_pacs
    sr_uid, rows, events = _publish_and_send(tmp_path, port, fallback=False)
    sr_row = next(r for r in rows if r.sop_instance_uid == sr_uid)
    assert sr_row.state == "pending" and "refused the presentation context" in (sr_row.last_error or "")
    assert "fallback_to_comprehensive is off" in (sr_row.last_error or "")
    assert {r.state for r in rows if r.sop_instance_uid != sr_uid} == {"delivered"}  # the SC still went
    assert sr_uid not in {uid for _, uid in received}
    attempt = [e for e in events if e.action == "attempt" and e.sop_instance_uid == sr_uid]
    assert attempt and attempt[0].detail["status"] == "context-rejected"
