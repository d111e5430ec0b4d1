"""Every transfer syntax a PACS may hold arrives and is stored as sent (lossless and lossy ones), including
real JPEG 2000 CT from a Siemens scanner; each sent by storescu proposing that syntax where it can."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.uid import JPEG2000, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGBaseline8Bit, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE = "1.2.840.10008.5.1.4.1.1.128"

from dicom_node.store.file_meta import content_digest
from tests.dicom_node.receive.clients import echoscu, storescu, wait_for
from tests.dicom_node.receive.dicom_files import write_series

# transfer syntax -> (how the file is written, storescu option proposing it; None = send with pynetdicom)
SYNTAXES = {
    "1.2.840.10008.1.2": ("pydicom", "-xi"),
    "1.2.840.10008.1.2.1": ("pydicom", "-xe"),
    "1.2.840.10008.1.2.1.99": ("explicit", "-xd"),  # storescu deflates on the fly
    "1.2.840.10008.1.2.4.90": ("pydicom", "-xv"),
    "1.2.840.10008.1.2.4.91": ("pydicom", "-xw"),  # lossy JPEG 2000 (compression ratio 10)
    "1.2.840.10008.1.2.4.80": ("pydicom", "-xt"),
    "1.2.840.10008.1.2.4.81": ("pydicom", "-xu"),  # JPEG-LS near-lossless (NEAR 3)
    "1.2.840.10008.1.2.4.70": ("dcmcjpeg +e1", "-xs"),
    "1.2.840.10008.1.2.4.57": ("dcmcjpeg +el", None),  # storescu has no option proposing process 14
    "1.2.840.10008.1.2.4.51": ("dcmcjpeg +ee", "-xx"),  # JPEG extended, 12 bit
    "1.2.840.10008.1.2.4.50": ("dcmcjpeg +eb sc", "-xy"),  # JPEG baseline: 8 bit, so a Secondary Capture
    "1.2.840.10008.1.2.5": ("pydicom", "-xr"),
}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def _as_8_bit_secondary_capture(path: Path) -> None:
    """A CT slice made an 8-bit Secondary Capture image: JPEG baseline holds 8 bits only, and the CT and PET
    IODs need 16 (an 8-bit CT is refused at the C-STORE, test_bad_input)."""
    ds = dcmread(path)
    pixels = (ds.pixel_array.astype(np.int32) // 16).clip(0, 255).astype(np.uint8)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    ds.Modality = "OT"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path)


def _files(directory: Path, transfer_syntax: str, how: str) -> list[Path]:
    if how == "pydicom":
        return write_series(directory, "PT", 2, transfer_syntax=transfer_syntax)
    source = write_series(directory / "source", "CT", 2)
    if how == "explicit":
        return source
    out = []
    for path in source:
        if how.endswith(" sc"):
            _as_8_bit_secondary_capture(path)
        target = directory / path.name
        subprocess.run(["dcmcjpeg", how.split()[1], str(path), str(target)], check=True, capture_output=True)
        out.append(target)
    return out


def _send_with_pynetdicom(port: int, files: list[Path], transfer_syntax: str) -> list[int]:
    """pynetdicom sends a file's encoded bytes as they are, in the file's own transfer syntax."""
    ae = AE(ae_title="STORESCU")
    for sop_class in (CT_IMAGE, PET_IMAGE):
        ae.add_requested_context(sop_class, [transfer_syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="PSMA_NODE")
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(path).Status) for path in files]
    assoc.release()
    return statuses


def test_each_transfer_syntax_is_stored_as_sent(tmp_path: Path, receiving_node, node_db) -> None:
    node = receiving_node()
    db = node_db(node)
    expected: dict[str, str] = {}  # sop uid -> transfer syntax it must be stored in
    for uid, (how, option) in SYNTAXES.items():
        files = _files(tmp_path / uid, uid, how)
        if option is None:
            assert _send_with_pynetdicom(node.port, files, uid) == [0] * len(files)
        else:
            run = storescu(node.port, files, option)
            assert run.returncode == 0, run.output
            assert len(run.succeeded) == len(files), run.output
        for path in files:
            expected[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = uid

    rows = {row.sop_instance_uid: row for row in db.instances()}
    assert {uid: rows[uid].transfer_syntax_uid for uid in expected} == expected
    for row in rows.values():
        stored = Path(row.path).read_bytes()
        assert content_digest(stored) == row.sha256
        assert dcmread(row.path).pixel_array.shape == (32, 32)  # the bytes decode: nothing was lost
    assert echoscu(node.port).returncode == 0
    offered = [JPEG2000, JPEGBaseline8Bit, ExplicitVRLittleEndian]
    assert _negotiated(node.port, offered) == ExplicitVRLittleEndian
    assert _negotiated(node.port, [JPEG2000, JPEG2000Lossless, ExplicitVRLittleEndian]) == JPEG2000Lossless


def test_a_class_offered_only_in_a_syntax_the_node_lacks_is_named_in_log_and_audit(receiving_node,
                                                                                   node_db) -> None:
    """High-Throughput JPEG 2000 is not accepted: an archive holding PET that way learns why none arrives."""
    node = receiving_node()
    htj2k = "1.2.840.10008.1.2.4.201"
    ae = AE(ae_title="ARCHIVE")
    ae.add_requested_context(Verification)
    ae.add_requested_context(PET_IMAGE, [htj2k])
    assoc = ae.associate("127.0.0.1", node.port, ae_title="PSMA_NODE")
    assert assoc.is_established and [cx.abstract_syntax for cx in assoc.accepted_contexts] == [Verification]
    assoc.release()
    db = node_db(node)
    (row,) = wait_for(lambda: [r for r in db.audit("association", "accepted") if r.actor == "ARCHIVE"])
    assert row.detail["unsupported_transfer_syntaxes"] == {PET_IMAGE: htj2k}
    logged = [json.loads(line) for line in Path(node.config["logging"]["file"]).read_text().splitlines()]
    (warning,) = [line for line in logged if line["event"].startswith("storage classes offered only")]
    assert warning["offered"] == ("Positron Emission Tomography Image Storage in High-Throughput JPEG 2000 "
                                  f"Image Compression (Lossless Only) ({htj2k})")


def _negotiated(port: int, offered: list[str]) -> str:
    """The syntax the node picks from one PET context offering `offered`: lossless before lossy, so a sender
    holding uncompressed pixels is never asked to compress them lossily for the node."""
    ae = AE(ae_title="STORESCU")
    ae.add_requested_context(PET_IMAGE, offered)
    assoc = ae.associate("127.0.0.1", port, ae_title="PSMA_NODE")
    assert assoc.is_established
    (context,) = assoc.accepted_contexts
    assoc.release()
    return str(context.transfer_syntax[0])


def test_real_jpeg2000_ct_is_stored_and_analysable(tmp_path: Path, shared_data: Path, receiving_node,
                                                     node_db) -> None:
    files = sorted((shared_data / "real-ct-jpeg2000").iterdir())
    node = receiving_node()
    # These anonymised files have empty SOP Class/Instance UIDs (kept only in the file meta) and empty
    # Study/Series UIDs: dcmtk and pynetdicom clients will not send them and the node would refuse them
    # (test_bad_input). A PACS sends such images with its database's UIDs filled in, as done here; the
    # JPEG 2000 pixel data stays byte for byte as the scanner wrote it.
    sent = tmp_path / "sent"
    sent.mkdir()
    study_uid, series_uid = generate_uid(), generate_uid()
    for path in files:
        ds = dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.save_as(sent / path.name)
    assert _send_with_pynetdicom(node.port, sorted(sent.iterdir()), "1.2.840.10008.1.2.4.90") == [0] * 20
    rows = node_db(node).instances()
    assert len(rows) == 20
    for row in rows:
        assert row.transfer_syntax_uid == "1.2.840.10008.1.2.4.90"
        assert row.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"  # only in the file meta of these files
        assert row.analysable and row.modality == "CT"
        assert row.header["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2"
        assert row.slice_position is not None and row.header["Rows"] == 512
    stored = dcmread(rows[0].path)
    assert stored.pixel_array.shape == (512, 512)
