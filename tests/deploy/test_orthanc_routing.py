"""The demo PACS wiring: a real Orthanc running deploy/orthanc's config and Lua script routes a PET/CT study
to a real node, once, and never routes the node's results (or a study without PET) back to it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicom_node.synth import SynthOptions, generate_study
from tests.support.tools import require_tool
from tests.support.node import REPO, NodeProcess, free_port, wait_for_port

ORTHANC_DIR = REPO / "deploy" / "orthanc"
ROUTED_METADATA = "RoutedToPsmaNode"


class Orthanc:
    """/usr/sbin/Orthanc with the demo configuration, its ports and folders moved into a temp dir."""

    def __init__(self, work: Path, node_port: int) -> None:
        work.mkdir(parents=True, exist_ok=True)
        config: dict[str, Any] = json.loads((ORTHANC_DIR / "orthanc.json").read_text())
        self.dicom_port, self.http_port = free_port(), free_port()
        ae, _, _ = config["DicomModalities"]["psma-node"]
        config.update({
            "DicomPort": self.dicom_port, "HttpPort": self.http_port, "RemoteAccessAllowed": False,
            "StorageDirectory": str(work / "db"), "IndexDirectory": str(work / "db"), "StableAge": 1,
            "DicomModalities": {"psma-node": [ae, "127.0.0.1", node_port]},
            "LuaScripts": [str(ORTHANC_DIR / "route-to-psma-node.lua")],
        })
        self.ae_title = config["DicomAet"]
        self.user, self.password = next(iter(config["RegisteredUsers"].items()))
        path = work / "orthanc.json"
        path.write_text(json.dumps(config))
        self.log = open(work / "orthanc.log", "wb")
        self.proc = subprocess.Popen([require_tool("Orthanc"), str(path)], stdout=self.log, stderr=self.log)
        wait_for_port(self.http_port, timeout=30)
        wait_for_port(self.dicom_port, timeout=30)

    def get(self, uri: str) -> Any:
        import httpx

        response = httpx.get(f"http://127.0.0.1:{self.http_port}{uri}", auth=(self.user, self.password))
        response.raise_for_status()
        return response.json() if "json" in response.headers.get("content-type", "") else response.text

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.log.close()


@pytest.fixture
def node(node_factory: Any) -> NodeProcess:
    return node_factory({"workers": {"count": 0}})


@pytest.fixture
def orthanc(tmp_path: Path, node: NodeProcess) -> Iterator[Orthanc]:
    server = Orthanc(tmp_path / "orthanc", node.port)
    yield server
    server.stop()


def _storescu(orthanc: Orthanc, files: list[Path]) -> None:
    subprocess.run(
        [require_tool("storescu"), "-aec", orthanc.ae_title, "-aet", "MODALITY", "127.0.0.1",
         str(orthanc.dicom_port), *map(str, files)],
        check=True, capture_output=True, env={**os.environ, "TCP_NODELAY": "1"}, timeout=60,
    )


def _received(node: NodeProcess) -> list[Path]:
    storage = Path(node.config["storage"]["directory"])
    return sorted(storage.rglob("*.dcm")) if storage.exists() else []


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _result_like(study_file: Path, out: Path) -> Path:
    """A Secondary Capture in the same study, as the node sends back."""
    source = pydicom.dcmread(study_file)
    sc = pydicom.Dataset()
    for keyword in ("PatientName", "PatientID", "StudyInstanceUID", "StudyDate", "AccessionNumber"):
        setattr(sc, keyword, getattr(source, keyword, ""))
    sc.SOPClassUID = SecondaryCaptureImageStorage
    sc.SOPInstanceUID = generate_uid()
    sc.SeriesInstanceUID = generate_uid()
    sc.Modality, sc.SeriesNumber, sc.InstanceNumber, sc.ConversionType = "OT", 9901, 1, "WSD"
    sc.Rows = sc.Columns = 8
    sc.SamplesPerPixel, sc.PhotometricInterpretation = 1, "MONOCHROME2"
    sc.BitsAllocated, sc.BitsStored, sc.HighBit, sc.PixelRepresentation = 8, 8, 7, 0
    sc.PixelData = bytes(64)
    sc.file_meta = pydicom.dataset.FileMetaDataset()
    sc.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    sc.file_meta.MediaStorageSOPClassUID = sc.SOPClassUID
    sc.file_meta.MediaStorageSOPInstanceUID = sc.SOPInstanceUID
    sc.save_as(out, enforce_file_format=True)
    return out


def _study_files(out: Path, seed: int, modalities: tuple[str, ...]) -> list[Path]:
    generate_study(out, SynthOptions(seed=seed, ct_matrix=64, pet_matrix=32, extent_mm=150.0,
                                     ct_slice_mm=10.0, pet_slice_mm=10.0))
    return [path for modality in modalities for path in sorted((out / modality).glob("*.dcm"))]


def _wait_until_stable(orthanc: Orthanc) -> None:
    _wait_for(lambda: all(orthanc.get(f"/studies/{s}")["IsStable"] for s in orthanc.get("/studies")), 15,
              "Orthanc to call the studies stable")
    time.sleep(1.0)  # the stable-study callback runs right after; give the script its moment


def test_pet_ct_study_is_routed_once_and_results_and_ct_only_studies_are_not(
    tmp_path: Path, node: NodeProcess, orthanc: Orthanc
) -> None:
    pet_ct = _study_files(tmp_path / "pet-ct", 0, ("CT", "PT"))
    ct_only = _study_files(tmp_path / "ct-only", 1, ("CT",))
    _storescu(orthanc, pet_ct + ct_only)
    _wait_for(lambda: len(_received(node)) == len(pet_ct), 30, f"the node to receive {len(pet_ct)} instances")
    _wait_until_stable(orthanc)
    routed = [series for series in orthanc.get("/series")
              if ROUTED_METADATA in orthanc.get(f"/series/{series}/metadata")]
    assert len(orthanc.get("/series")) == 3 and len(routed) == 2  # the CT-only study's series stays

    _storescu(orthanc, [_result_like(pet_ct[0], tmp_path / "result-sc.dcm")])
    _wait_for(lambda: len(orthanc.get("/series")) == 4, 10, "Orthanc to store the result")
    _wait_until_stable(orthanc)
    assert len(_received(node)) == len(pet_ct), "results or already routed series were sent again"
