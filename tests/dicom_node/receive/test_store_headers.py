"""Header extraction without pixel decoding: the fields later stages rely on, as plain JSON-able values."""

from __future__ import annotations

import json
import math
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom.dsutils import create_file_meta, encode_file_meta

from dicom_node.patient_identity import IDENTITY_ATTRIBUTES
from dicom_node.store.file_meta import received_file
from dicom_node.store.headers import HEADER_KEYWORDS, parse_instance
from dicom_node.store.status import InstanceRefused
from tests.dicom_node.receive.dicom_files import image


def _bytes(ds) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_real_ge_pet_header_fields(shared_data: Path) -> None:
    parsed = parse_instance((shared_data / "real-pet-ge-sts001" / "PT" / "1-001.dcm").read_bytes())
    header = parsed.header
    assert json.loads(json.dumps(header)) == header
    assert set(header) <= set(HEADER_KEYWORDS) | {"RadiopharmaceuticalName", "RadionuclideHalfLife",
                                                  "RadionuclideCodeMeaning", "RadiopharmaceuticalCodeMeaning",
                                                  *IDENTITY_ATTRIBUTES.values()}
    assert header["Units"] == "BQML" and header["DecayCorrection"] == "START"
    assert header["RadionuclideHalfLife"] == 6588.0 and header["RadionuclideCodeMeaning"] == "18F"
    assert header["RadiopharmaceuticalName"].startswith("FDG")
    assert header["CorrectedImage"][:2] == ["DECY", "ATTN"]
    assert header["PixelSpacing"] == [4.6875, 4.6875] and header["Rows"] == 128
    assert (parsed.image_index, parsed.number_of_slices, parsed.number_of_time_slices) == (267, 267, 6)
    assert parsed.slice_position == pytest.approx(-11.479994)
    assert parsed.analysable and parsed.modality == "PT"


def test_uids_only_in_file_meta_are_taken_from_the_request(shared_data: Path) -> None:
    """The real JPEG 2000 CT keeps SOP Class/Instance UIDs only in its file meta."""
    data = (shared_data / "real-ct-jpeg2000").iterdir().__next__().read_bytes()
    with pytest.raises(InstanceRefused) as refused:  # anonymised: no Study Instance UID either
        parse_instance(data, "1.2.840.10008.5.1.4.1.1.2")
    assert refused.value.status == 0xA900 and refused.value.reason == "missing Study Instance UID"


def test_slice_position_follows_the_slice_normal_for_oblique_and_sagittal_slices() -> None:
    ds = image("CT", generate_uid(), generate_uid(), 0)
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]  # sagittal: normal = row x col = (-1, 0, 0)
    ds.ImagePositionPatient = [12.5, -100, 50]
    assert parse_instance(_bytes(ds)).slice_position == -12.5
    c = math.cos(math.radians(30))
    s = math.sin(math.radians(30))
    ds.ImageOrientationPatient = [1, 0, 0, 0, c, -s]  # tilted about x: normal = (0, s, c)
    ds.ImagePositionPatient = [0, 10, 20]
    assert parse_instance(_bytes(ds)).slice_position == pytest.approx(10 * s + 20 * c)


@pytest.mark.parametrize("keyword, placeholder, raw, corrupt, reason", [
    ("InstanceNumber", 918273, b"918273", b"abcdef", "InstanceNumber"),
    ("ImagePositionPatient", [111.5, 222.5, 333.5], b"111.5\\222.5\\333.5 ", b"111.5\\222.5       ",
     "ImagePositionPatient must be 3 numbers"),
    ("ImageOrientationPatient", [0.123456, 0, 0, 0, 1, 0], b"0.123456", b"xxxxxxxx",
     "ImageOrientationPatient"),
    ("PixelSpacing", [4.125, 1], b"4.125", b"nan  ", "PixelSpacing is not a finite number"),
])
def test_malformed_numeric_values_refuse_the_instance(keyword: str, placeholder: object, raw: bytes,
                                                      corrupt: bytes, reason: str) -> None:
    ds = image("PT", generate_uid(), generate_uid(), 0)
    setattr(ds, keyword, placeholder)
    data = _bytes(ds)
    assert data.count(raw) == 1
    with pytest.raises(InstanceRefused) as refused:
        parse_instance(data.replace(raw, corrupt))
    assert refused.value.status == 0xC000 and reason in refused.value.reason


def test_text_is_made_safe_for_postgresql() -> None:
    ds = image("PT", generate_uid(), generate_uid(), 0)
    ds.SeriesDescription = "PET\x00AC"
    parsed = parse_instance(_bytes(ds))
    assert parsed.header["SeriesDescription"] == "PETAC"


@pytest.mark.parametrize("sop_instance_uid", ["1.2.3", "1.2.34", generate_uid()], ids=["odd", "even", "generated"])
def test_received_file_is_what_pynetdicom_would_write(sop_instance_uid: str) -> None:
    ct, explicit = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1"
    meta = encode_file_meta(create_file_meta(sop_class_uid=ct, sop_instance_uid=sop_instance_uid,
                                             transfer_syntax=explicit))
    body = _bytes(image("CT", generate_uid(), generate_uid(), 0, size=8))[132:]
    assert received_file(ct, sop_instance_uid, explicit, memoryview(body)) == b"\x00" * 128 + b"DICM" + meta + body
