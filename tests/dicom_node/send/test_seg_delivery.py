"""The SEG reaches a real Orthanc through the outbox like the SR and the SC, over DIMSE and STOW-RS."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pytest
import requests
from sqlalchemy import select

from db.models import OutboxItem
from db.session import transaction
from dicom_node import send
from dicom_node.report import publish_result
from tests.dicom_node.report.synthetic import make_pet_header, make_sessions, make_settings, seed_study
from tests.dicom_node.report.synthetic_findings import seed_analysed_series
from tests.support.orthanc import OrthancServer

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture(autouse=True)
def _fresh_sender() -> Iterator[None]:
    send.reset_holds()
    yield
    send.wait_idle()
    send.reset_holds()


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

        send.send_tick(settings, sessions, wait=True)

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
