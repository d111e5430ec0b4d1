"""The SEG reaches a real Orthanc through the outbox like the SR and the SC, over DIMSE and STOW-RS; a PACS
without Segmentation Storage still gets the rest, and the SEG row says how to stop sending it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pytest
import requests
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    Comprehensive3DSRStorage,
    SecondaryCaptureImageStorage,
    Verification,
)
from sqlalchemy import select

from db.models import AuditEvent, OutboxItem
from db.session import transaction
from dicom_node.report import publish_result
from dicom_node.send import Sender
from tests.dicom_node.report.synthetic import make_pet_header, make_sessions, seed_study
from tests.support.settings import make_settings
from tests.dicom_node.report.synthetic_findings import seed_analysed_series
from tests.support.node import free_port
from tests.support.orthanc import OrthancServer

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.mark.parametrize("kind", ["dicom", "stow"])
def test_seg_is_delivered_to_orthanc_confirmed_and_reads_back(tmp_path: Path, kind: str) -> None:
    db_url = f"sqlite:///{tmp_path / 'node.db'}"
    with OrthancServer(tmp_path / "orthanc", dicomweb=kind == "stow") as orthanc:
        destination = (
            {"name": "pacs", "kind": "dicom", "ae_title": orthanc.aet, "host": "127.0.0.1",
             "port": orthanc.dicom_port, "confirm_with_cfind": True}
            if kind == "dicom" else
            {"name": "pacs", "kind": "stow", "url": f"{orthanc.url}/dicom-web", "confirm_with_cfind": True}
        )
        settings = make_settings(tmp_path, db_url, destinations=[destination])
        sessions = make_sessions(db_url)
        pet = make_pet_header()
        with transaction(sessions) as session:
            study, result = seed_study(session, pet)
            analysis, pet_headers, _ = seed_analysed_series(session, study, pet, tmp_path / "incoming")
            publish_result(session, settings, study, result, analysis, pet)
            seg_uid = result.summary["seg_sop_instance_uid"]
        assert seg_uid

        Sender(settings, sessions).tick(wait=True)

        with transaction(sessions) as session:
            rows = list(session.execute(select(OutboxItem)).scalars())
        assert {r.state for r in rows} == {"confirmed"}, [(r.sop_class_uid, r.last_error) for r in rows]
        assert [r.sop_class_uid for r in rows].count(SEG_CLASS) == 1
        tags = orthanc.instance_tags(seg_uid)
        assert tags is not None and tags["Modality"] == "SEG" and tags["SOPClassUID"] == SEG_CLASS
        assert tags["StudyInstanceUID"] == pet.StudyInstanceUID
        found = orthanc.post("/tools/find", {"Level": "Instance", "Query": {"SOPInstanceUID": seg_uid}})
        response = requests.get(f"{orthanc.url}/instances/{found[0]}/file", timeout=30)
        response.raise_for_status()
        (tmp_path / "back.dcm").write_bytes(response.content)
        seg = hd.seg.segread(tmp_path / "back.dcm")
        assert len(seg.SegmentSequence) == 4
        assert {uid for _, _, uid in seg.get_source_image_uids()} <= {str(h.SOPInstanceUID) for h in pet_headers}


@pytest.fixture
def pacs_without_seg() -> Iterator[tuple[int, list[str]]]:
    """(port, SOP Class UIDs received) of a real pynetdicom SCP that stores SR and SC but not SEG."""
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.dataset.SOPClassUID))
        return 0x0000

    ae = AE(ae_title="NOSEG")
    for sop_class in (Comprehensive3DSRStorage, SecondaryCaptureImageStorage, Verification):
        ae.add_supported_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    yield port, received
    server.shutdown()


def test_pacs_without_seg_storage_gets_the_rest_and_the_seg_row_says_how_to_turn_it_off(
        tmp_path: Path, pacs_without_seg: tuple[int, list[str]]) -> None:
    port, received = pacs_without_seg
    db_url = f"sqlite:///{tmp_path / 'node.db'}"
    destination = {"name": "noseg", "kind": "dicom", "ae_title": "NOSEG", "host": "127.0.0.1", "port": port}
    settings = make_settings(tmp_path, db_url, destinations=[destination])
    sessions = make_sessions(db_url)
    pet = make_pet_header()
    with transaction(sessions) as session:
        study, result = seed_study(session, pet)
        analysis, _, _ = seed_analysed_series(session, study, pet, tmp_path / "incoming")
        publish_result(session, settings, study, result, analysis, pet)

    Sender(settings, sessions).tick(wait=True)

    with transaction(sessions) as session:
        rows = list(session.execute(select(OutboxItem)).scalars())
        attempts = list(session.execute(select(AuditEvent).where(AuditEvent.action == "attempt")).scalars())
    seg_row = next(r for r in rows if r.sop_class_uid == SEG_CLASS)
    assert seg_row.state == "pending" and "refused the presentation context" in (seg_row.last_error or "")
    assert "results.seg_enabled" in (seg_row.last_error or "")
    assert {r.state for r in rows if r is not seg_row} == {"delivered"}
    assert SEG_CLASS not in received and len(received) == len(rows) - 1
    assert [a.detail["status"] for a in attempts if a.sop_instance_uid == seg_row.sop_instance_uid] == [
        "context-rejected"]
