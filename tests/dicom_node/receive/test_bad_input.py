"""Bad input is refused with the right status and an audit row naming the reason; the node keeps serving."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import data_element_generator
from pydicom.filewriter import write_file_meta_info
from pynetdicom.dsutils import encode
from pydicom.uid import generate_uid

from tests.dicom_node.receive.clients import (
    NodeDatabase,
    dcmtk_unreadable,
    echoscu,
    lenient_uids,
    pynetdicom_echo,
    send_on_context,
    send_raw_files,
    storescu,
    wait_for,
)
from tests.dicom_node.receive.dicom_files import image, write_series
from tests.support.node import NodeProcess, write_config

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE = "1.2.840.10008.5.1.4.1.1.128"
ENHANCED_PET = "1.2.840.10008.5.1.4.1.1.130"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MAX_INSTANCE_BYTES = 300_000  # test slices are ~3 kB, the real JPEG 2000 CT ~160 kB, 512x512 ~520 kB


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node shared by the refusals below (each checks only its own instance and audit row)."""
    directory = tmp_path_factory.mktemp("bad-input")
    config = write_config(directory, {"workers": {"count": 0},
                                      "node": {"max_instance_bytes": MAX_INSTANCE_BYTES}})
    process = NodeProcess(config).start()
    yield process
    process.stop()


def _refusal(db: NodeDatabase, sop_instance_uid: str) -> str:
    rows = [row for row in db.audit("instance", "refused") if row.sop_instance_uid == sop_instance_uid]
    assert len(rows) == 1, f"expected one refusal audit row for {sop_instance_uid}"
    assert rows[0].outcome == "refused"
    return rows[0].reason


def _still_serving(node: NodeProcess) -> None:
    assert pynetdicom_echo(node.port)
    good = write_series(Path(node.config_path).parent / "after" / generate_uid(), "PT", 1)
    assert send_raw_files(node.port, good) == [0]


def _file(tmp_path: Path, name: str, ds: Dataset | None = None, body: bytes | None = None) -> Path:
    """A DICOM file whose meta is kept as given (it may disagree with the dataset); `body` replaces the
    encoded dataset after the file meta."""
    ds = ds if ds is not None else image("PT", generate_uid(), generate_uid(), 0)
    path = tmp_path / name
    with path.open("wb") as fp:
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
        fp.write(body if body is not None else encode(ds, False, True))
    return path


def _uid_of(path: Path) -> str:
    from pydicom.filereader import read_file_meta_info
    return str(read_file_meta_info(path).MediaStorageSOPInstanceUID)


@pytest.mark.parametrize("body, reason", [
    (b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff\x01\x02\x03\x04\x08\x00\x00\x00xxxxxxxx",
     "unparseable dataset"),
    (b"this is not a DICOM data set at all " * 5, "element (6874,7369) has no valid VR (not explicit VR data)"),
], ids=["broken-sequence", "text"])
def test_unparseable_dataset_is_refused_with_c000(tmp_path: Path, node: NodeProcess, db: NodeDatabase,
                                                   body: bytes, reason: str) -> None:
    path = _file(tmp_path, "garbage.dcm", body=body)
    assert send_raw_files(node.port, [path]) == [0xC000]
    assert _refusal(db, _uid_of(path)).startswith(reason)
    assert _uid_of(path) not in db.instance_uids()
    _still_serving(node)


def test_dataset_sop_class_disagreeing_with_request_is_refused_with_a900(
        tmp_path: Path, node: NodeProcess, db: NodeDatabase) -> None:
    ds = image("PT", generate_uid(), generate_uid(), 0)
    ds.SOPClassUID = CT_IMAGE  # the file meta (and so the request) still says PET
    path = _file(tmp_path, "mismatch.dcm", ds)
    assert send_raw_files(node.port, [path]) == [0xA900]
    assert "disagrees" in _refusal(db, ds.SOPInstanceUID)
    _still_serving(node)


def test_request_sop_class_disagreeing_with_context_is_refused_with_a900(
        tmp_path: Path, node: NodeProcess, db: NodeDatabase) -> None:
    ds = image("CT", generate_uid(), generate_uid(), 0)
    status = send_on_context(node.port, encode(ds, False, True), CT_IMAGE, PET_IMAGE, ds.SOPInstanceUID)
    assert status == 0xA900
    assert "presentation context" in _refusal(db, ds.SOPInstanceUID)
    _still_serving(node)


def test_real_anonymised_file_without_study_uid_is_refused_with_a900(
        shared_data: Path, node: NodeProcess, db: NodeDatabase) -> None:
    path = sorted((shared_data / "real-ct-jpeg2000").iterdir())[0]
    assert send_raw_files(node.port, [path]) == [0xA900]
    assert _refusal(db, _uid_of(path)) == "missing Study Instance UID"
    _still_serving(node)


@pytest.mark.parametrize("field, value, expected", [
    ("SeriesInstanceUID", "", "missing Series Instance UID"),
    ("StudyInstanceUID", "../../../etc", "invalid Study Instance UID"),
    ("SeriesInstanceUID", "1.2." + "3" * 70, "invalid Series Instance UID"),
])
def test_missing_or_invalid_uids_are_refused_with_a900(
        tmp_path: Path, node: NodeProcess, db: NodeDatabase, field: str, value: str, expected: str) -> None:
    ds = image("PT", generate_uid(), generate_uid(), 0)
    setattr(ds, field, value)
    path = _file(tmp_path, "uid.dcm", ds)
    assert send_raw_files(node.port, [path]) == [0xA900]
    assert _refusal(db, ds.SOPInstanceUID).startswith(expected)
    assert not list(Path(node.config["storage"]["directory"]).rglob("etc"))


def test_truncated_pixel_data_is_refused_with_c002(tmp_path: Path, node: NodeProcess,
                                                   db: NodeDatabase) -> None:
    ds = image("PT", generate_uid(), generate_uid(), 0)
    ds.PixelData = ds.PixelData[:1000]
    path = _file(tmp_path, "truncated.dcm", ds)
    assert send_raw_files(node.port, [path]) == [0xC002]
    assert _refusal(db, ds.SOPInstanceUID).startswith("pixel data truncated")
    _still_serving(node)


def test_oversized_instance_is_refused_with_a700(tmp_path: Path, node: NodeProcess, db: NodeDatabase) -> None:
    files = write_series(tmp_path, "PT", 1, size=512)
    run = storescu(node.port, files)
    assert run.statuses == {str(files[0]): "Refused: OutOfResources"}, run.output
    uid = str(dcmread(files[0], stop_before_pixels=True).SOPInstanceUID)
    assert "exceeds max_instance_bytes" in _refusal(db, uid)
    assert uid not in db.instance_uids()
    _still_serving(node)


def test_enhanced_pet_and_other_classes_are_stored_not_analysable(
        tmp_path: Path, node: NodeProcess, db: NodeDatabase) -> None:
    enhanced = image("PT", generate_uid(), generate_uid(), 0)
    enhanced.SOPClassUID = enhanced.file_meta.MediaStorageSOPClassUID = ENHANCED_PET
    capture = image("OT", generate_uid(), generate_uid(), 0)
    capture.SOPClassUID = capture.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    files = [_file(tmp_path, "enhanced.dcm", enhanced), _file(tmp_path, "sc.dcm", capture)]
    assert send_raw_files(node.port, files) == [0, 0]
    rows = {row.sop_instance_uid: row for row in db.instances()}
    assert rows[enhanced.SOPInstanceUID].analysable is False
    assert rows[capture.SOPInstanceUID].analysable is False
    assert rows[capture.SOPInstanceUID].sop_class_uid == SECONDARY_CAPTURE


def test_other_classes_refused_by_configuration(tmp_path: Path, receiving_node, node_db) -> None:
    node = receiving_node({"node": {"other_storage_classes": "refuse"}})
    capture = image("OT", generate_uid(), generate_uid(), 0)
    capture.SOPClassUID = capture.file_meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    path = _file(tmp_path, "sc.dcm", capture)
    run = storescu(node.port, [path], "-R")
    assert run.returncode != 0 and "No Acceptable Presentation Contexts" in run.output, run.output
    db = node_db(node)
    accepted = wait_for(lambda: db.audit("association", "accepted"))
    assert accepted and accepted[-1].detail["refused_sop_classes"] == [SECONDARY_CAPTURE]
    assert db.instances() == []
    pet = write_series(tmp_path / "pet", "PT", 1)
    assert storescu(node.port, pet).succeeded == [str(pet[0])]


def test_disk_floor_refuses_with_a700_and_keeps_serving(tmp_path: Path, receiving_node, node_db) -> None:
    node = receiving_node({"node": {"min_free_disk_mb": 10**9}})
    files = write_series(tmp_path, "PT", 2)
    run = storescu(node.port, files)
    assert set(run.statuses.values()) == {"Refused: OutOfResources"}, run.output
    db = node_db(node)
    reasons = [row.reason for row in db.audit("instance", "refused")]
    assert len(reasons) == len(run.statuses) >= 1  # storescu stops after an out-of-resources answer
    assert all("below min_free_disk_mb" in reason for reason in reasons)
    assert db.instances() == []
    assert not any(Path(node.config["storage"]["directory"]).rglob("*.dcm"))
    assert echoscu(node.port).returncode == 0


@pytest.mark.parametrize("sent_implicit, context", [
    (False, "1.2.840.10008.1.2"), (True, "1.2.840.10008.1.2.1")], ids=["explicit-on-implicit", "implicit-on-explicit"])
def test_data_set_encoded_against_the_negotiated_syntax_is_refused_with_c001(
        node: NodeProcess, db: NodeDatabase, sent_implicit: bool, context: str) -> None:
    ds = image("CT", generate_uid(), generate_uid(), 0)
    status = send_on_context(node.port, encode(ds, sent_implicit, True), CT_IMAGE, CT_IMAGE, ds.SOPInstanceUID,
                             transfer_syntax=context)
    assert status == 0xC001  # pydicom would read it, dcmtk not: acknowledging it would store an unreadable file
    found, negotiated = ("implicit", "Explicit") if sent_implicit else ("explicit", "Implicit")
    assert _refusal(db, ds.SOPInstanceUID).startswith(
        f"data set is encoded with {found} VR but the negotiated transfer syntax is {negotiated} VR Little Endian")
    assert ds.SOPInstanceUID not in db.instance_uids()
    _still_serving(node)


def test_overlong_sop_instance_uid_is_refused_with_a900_not_dropped(node: NodeProcess, db: NodeDatabase) -> None:
    ds = image("CT", generate_uid(), generate_uid(), 0)
    ds.SOPInstanceUID = "1.2." + "3" * 198  # 202 characters in the request and the data set
    with lenient_uids():
        status = send_on_context(node.port, encode(ds, False, True), CT_IMAGE, CT_IMAGE, ds.SOPInstanceUID)
    assert status == 0xA900
    rows = [row for row in db.audit("instance", "refused") if row.sop_instance_uid == ds.SOPInstanceUID[:64]]
    assert len(rows) == 1
    assert rows[0].reason.startswith("invalid SOP Instance UID: 202 characters, at most 64 allowed")
    _still_serving(node)


def _ct(**changes: object) -> Dataset:
    ds = image("CT", generate_uid(), generate_uid(), 0)
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


@pytest.mark.parametrize("changes, status, reason", [
    ({"PixelData": None}, 0xA900, "no Pixel Data: a CT Image Storage instance must carry its image"),
    ({"PixelData": b""}, 0xC002, "Pixel Data is empty (0 bytes)"),
    ({"BitsAllocated": 8, "BitsStored": 8, "HighBit": 7}, 0xA900,
     "Bits Allocated 8: a CT Image Storage slice has 16 bits per pixel"),
    ({"SamplesPerPixel": 3}, 0xA900, "Samples per Pixel 3: a CT Image Storage slice has one sample per pixel"),
    ({"NumberOfFrames": 2}, 0xA900, "Number of Frames 2: a CT Image Storage instance holds one slice"),
    ({"Rows": 16}, 0xC002, "pixel data of 2048 bytes does not match Rows x Columns x Samples x Bits Allocated "
                           "x Frames (16x32x1x16x1), which needs 1024"),
], ids=["missing", "empty", "8-bit-ct", "rgb-ct", "two-frames", "layout-mismatch"])
def test_pixel_data_the_analysis_could_not_use_is_refused_at_receive_time(
        tmp_path: Path, node: NodeProcess, db: NodeDatabase, changes: dict[str, object], status: int,
        reason: str) -> None:
    ds = _ct(**changes)
    path = _file(tmp_path, "pixels.dcm", ds)
    assert send_raw_files(node.port, [path]) == [status]
    assert _refusal(db, ds.SOPInstanceUID) == reason
    assert ds.SOPInstanceUID not in db.instance_uids()


def test_data_set_cut_short_is_refused_as_truncated_not_as_missing_uid(tmp_path: Path, node: NodeProcess,
                                                                       db: NodeDatabase) -> None:
    ds = image("CT", generate_uid(), generate_uid(), 0)
    body = encode(ds, False, True)
    ends = [element.value_tell + element.length
            for element in data_element_generator(BytesIO(body), False, True) if element.tag < 0x0020000D]
    cut_in_header, at_boundary = _file(tmp_path, "a.dcm", ds, body[:ends[-1] + 4]), \
        _file(tmp_path, "b.dcm", ds, body[:ends[-1]])
    assert send_raw_files(node.port, [cut_in_header, at_boundary]) == [0xC000, 0xC000]
    reasons = [row.reason for row in db.audit("instance", "refused") if row.sop_instance_uid == ds.SOPInstanceUID]
    assert reasons[0].startswith("dataset truncated: 4 bytes of a cut element header after element")
    assert reasons[1].startswith("data set ends after element") and reasons[1].endswith("it was cut short")


def test_every_acknowledged_file_is_readable_by_dcmtk(node: NodeProcess) -> None:
    """Runs last in this module: whatever the refusals above let through, dcmtk can read."""
    stored = sorted(Path(node.config["storage"]["directory"]).rglob("*.dcm"))
    assert stored and dcmtk_unreadable(stored) == []
