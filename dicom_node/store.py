"""Durable storage of received instances: parse the header, write the bytes safely, record the row.

The contract with the sender is that a success status means the instance survives a crash: the bytes are
fsynced and renamed into place, and the instance row is committed, before the receiver answers. Nothing here
decodes pixel data, so the receiving process stays light.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import re
import struct
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from io import BytesIO
from pathlib import Path
from typing import Any, ClassVar

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import UID
from pydicom.valuerep import VR
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db import audit
from db.models import Instance, Study, utcnow
from dicom_node.config import Settings
from dicom_node.patient_identity import identity_hashes

log = logging.getLogger(__name__)

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.130"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128.1"
LEGACY_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
# Classes the analysis understands; the enhanced ones are stored but later stages do not read them.
ANALYSABLE_SOP_CLASSES = frozenset({PET_IMAGE_STORAGE, CT_IMAGE_STORAGE})
PET_CT_SOP_CLASSES = ANALYSABLE_SOP_CLASSES | {
    ENHANCED_PET_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    LEGACY_ENHANCED_PET_IMAGE_STORAGE,
    LEGACY_ENHANCED_CT_IMAGE_STORAGE,
}

# Header fields copied into Instance.header; the assembly stage relies on exactly these names.
HEADER_KEYWORDS = (
    "Modality", "SOPClassUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate",
    "SeriesTime", "AcquisitionDate", "AcquisitionTime", "ImageType", "FrameOfReferenceUID", "InstanceNumber",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns",
    "ImageIndex", "NumberOfSlices", "NumberOfTimeSlices", "SeriesType", "CorrectedImage", "Units",
    "DecayCorrection", "AccessionNumber", "StudyDescription", "AdditionalPatientHistory",
    "RequestedProcedureComments", "BodyPartExamined", "GantryDetectorTilt", "BitsAllocated", "SamplesPerPixel",
)
_RADIOPHARMACEUTICAL_FIELDS = (
    "RadiopharmaceuticalName", "RadionuclideHalfLife", "RadionuclideCodeMeaning",
    "RadiopharmaceuticalCodeMeaning",
)
_TAGS = {keyword: Tag(keyword)
         for keyword in (*HEADER_KEYWORDS, "Radiopharmaceutical", "RadionuclideHalfLife", "CodeMeaning",
                         "RadiopharmaceuticalInformationSequence", "StudyInstanceUID", "SOPInstanceUID",
                         "PatientName", "PatientID", "StudyDate", "PatientBirthDate",
                         "Rows", "Columns", "BitsAllocated", "BitsStored", "SamplesPerPixel", "NumberOfFrames")}
# Native (unencapsulated) transfer syntaxes, whose pixel data length can be checked against the header.
_NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99",
                              "1.2.840.10008.1.2.2"})
UNDEFINED_LENGTH = 0xFFFFFFFF
IMPLICIT_VR = "1.2.840.10008.1.2"
DEFLATED_EXPLICIT_VR = "1.2.840.10008.1.2.1.99"
_VR_NAMES = frozenset(vr.value for vr in VR)
_VR_CODES = frozenset(name.encode("ascii") for name in _VR_NAMES)
_PIXEL_DATA = Tag("PixelData")
# Image Pixel rules of the single-frame PET and CT IODs (PS3.3 C.8.2.1, C.8.9.4) the analysis relies on.
_SINGLE_FRAME_LAYOUT = {CT_IMAGE_STORAGE: ("CT Image Storage", (16,)),
                        PET_IMAGE_STORAGE: ("PET Image Storage", (16, 32))}

# C-STORE failure statuses (PS3.4 B.2.3): the A9xx / Cxxx classes, with a sub-code per kind of problem so a
# sender's log says which; the audit row and the node's log give the full reason.
STATUS_NOT_THE_SOP_CLASS = 0xA900  # missing/invalid identifiers, no pixel data, a layout the IOD forbids
STATUS_CANNOT_UNDERSTAND = 0xC000  # unparseable or truncated data set
STATUS_WRONG_ENCODING = 0xC001  # encoded otherwise than the negotiated transfer syntax says
STATUS_PIXEL_DATA_MISMATCH = 0xC002  # pixel data empty, or its length does not match its description
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
TEMP_SUFFIX = ".tmp"
INCOMING = ".incoming"  # temporary files, on the same filesystem as their final place


class InstanceRefused(Exception):
    """An instance the node will not store; `status` is the C-STORE status, the message the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class ParsedInstance:
    """What the node keeps of an instance's header; read without touching pixel values."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    accession_number: str | None
    patient_id: str | None
    patient_name: str | None
    study_date: str | None
    modality: str | None
    frame_of_reference_uid: str | None
    instance_number: int | None
    image_index: int | None
    number_of_slices: int | None
    number_of_time_slices: int | None
    slice_position: float | None
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def analysable(self) -> bool:
        return self.sop_class_uid in ANALYSABLE_SOP_CLASSES


def clean_text(value: str) -> str:
    """Text safe for any database column."""
    # PostgreSQL refuses NUL characters and unpaired surrogates; neither carries meaning in DICOM text.
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _json_value(keyword: str, value: Any) -> Any:
    """A header value as plain JSON data: numbers as numbers, multi-values as lists."""
    if isinstance(value, (MultiValue, list, tuple)):
        return [_json_value(keyword, item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise InstanceRefused(0xC000, f"{keyword} is not a finite number ({value!r})")
        return int(value) if isinstance(value, int) else number
    if isinstance(value, bytes):
        return clean_text(value.decode("ascii", "replace"))
    return clean_text(str(value))


class _HeaderValues:
    """Converted header values of one dataset, memoised per process by their encoded bytes.

    pydicom's value conversion costs far more than reading the file; most header values repeat across a
    series (geometry, descriptions, the radiopharmaceutical sequence), so each distinct encoding is
    converted once. The key holds everything conversion depends on: tag, VR, the bytes, the encoding and
    the character set.
    """

    _memo: ClassVar[dict[tuple[Any, ...], Any]] = {}
    _MEMO_LIMIT = 50_000
    _VALUE_LIMIT = 1024  # bytes; longer values (unusual in these fields) are converted every time

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        charset = ds.get_item(0x00080005)
        self.context = (ds.is_implicit_VR, ds.is_little_endian,
                        charset.value if isinstance(charset, RawDataElement) else None)

    def _memoised(self, ds: Dataset, tag: Any, convert: Any) -> Any:
        raw = ds.get_item(tag)
        if raw is None:
            return None
        if not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes) \
                or len(raw.value) > self._VALUE_LIMIT:
            return convert(ds, tag)
        key = (tag, raw.VR, raw.value, self.context)
        try:
            return self._memo[key]
        except KeyError:
            pass
        value = convert(ds, tag)
        if len(self._memo) >= self._MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = value
        return value

    def json(self, keyword: str, ds: Dataset | None = None) -> Any:
        """A value converted to JSON data, None if absent or empty; a malformed value refuses the instance."""
        return self._memoised(self.ds if ds is None else ds, _TAGS[keyword],
                              lambda source, tag: _json_element(source, tag, keyword))

    def text(self, keyword: str) -> str | None:
        """A value as pydicom's text form (None if absent); used for UIDs and patient fields."""
        return self._memoised(self.ds, _TAGS[keyword], _text_element)

    def radiopharmaceutical(self) -> dict[str, Any]:
        fields = self._memoised(self.ds, _TAGS["RadiopharmaceuticalInformationSequence"],
                                lambda source, _tag: self._read_radiopharmaceutical(source))
        return dict(fields or {})

    def _read_radiopharmaceutical(self, ds: Dataset) -> dict[str, Any]:
        item = _first_item(ds, "RadiopharmaceuticalInformationSequence")
        if item is None:
            return {}
        fields: dict[str, Any] = {
            "RadiopharmaceuticalName": self.json("Radiopharmaceutical", item),
            "RadionuclideHalfLife": self.json("RadionuclideHalfLife", item),
        }
        nuclide = _first_item(item, "RadionuclideCodeSequence")
        if nuclide is not None:
            fields["RadionuclideCodeMeaning"] = self.json("CodeMeaning", nuclide)
        pharmaceutical = _first_item(item, "RadiopharmaceuticalCodeSequence")
        if pharmaceutical is not None:
            fields["RadiopharmaceuticalCodeMeaning"] = self.json("CodeMeaning", pharmaceutical)
        return fields


def _json_element(ds: Dataset, tag: Any, keyword: str) -> Any:
    try:
        value = ds[tag].value
    except Exception as exc:  # pydicom raises many kinds on corrupt values
        raise InstanceRefused(0xC000, f"cannot read {keyword}: {exc}") from exc
    if value is None or value == "" or (isinstance(value, (MultiValue, list)) and len(value) == 0):
        return None
    return _json_value(keyword, value)


def _text_element(ds: Dataset, tag: Any) -> str | None:
    value = ds[tag].value
    return None if value is None else str(value)


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    try:
        sequence = ds.get(keyword)
        return sequence[0] if sequence else None
    except Exception as exc:
        raise InstanceRefused(0xC000, f"cannot read {keyword}: {exc}") from exc


def _as_int(header: dict[str, Any], keyword: str) -> int | None:
    value = header.get(keyword)
    if value is None:
        return None
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, (int, float)):
        raise InstanceRefused(0xC000, f"{keyword} is not a number ({value!r})")
    if abs(value) >= 2**31:
        raise InstanceRefused(0xC000, f"{keyword} out of range ({value!r})")
    return int(value)


def _numbers(header: dict[str, Any], keyword: str, count: int) -> list[float] | None:
    value = header.get(keyword)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != count or not all(
        isinstance(v, (int, float)) for v in value
    ):
        raise InstanceRefused(0xC000, f"{keyword} must be {count} numbers (got {value!r})")
    return [float(v) for v in value]


def _slice_position(header: dict[str, Any]) -> float | None:
    """Position along the slice normal (row x column direction), the order slices stack in."""
    position = _numbers(header, "ImagePositionPatient", 3)
    orientation = _numbers(header, "ImageOrientationPatient", 6)
    if position is None or orientation is None:
        return None
    r, c = orientation[:3], orientation[3:]
    normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    return sum(p * n for p, n in zip(position, normal))


def _uid(value: Any, name: str) -> str:
    text = str(value or "").strip().rstrip("\x00")
    if not text:
        raise InstanceRefused(STATUS_NOT_THE_SOP_CLASS, f"missing {name}")
    if len(text) > 64:
        raise InstanceRefused(STATUS_NOT_THE_SOP_CLASS,
                              f"invalid {name}: {len(text)} characters, at most 64 allowed ({text[:80]!r}...)")
    if not _UID.match(text):
        raise InstanceRefused(STATUS_NOT_THE_SOP_CLASS, f"invalid {name} {text[:80]!r}")
    return text


def _check_structure(ds: Dataset, data: bytes, transfer_syntax: str) -> None:
    """Refuse what pydicom reads quietly but other DICOM software cannot: a value shorter than its declared
    length or a last element header cut in two (a truncated stream); an unknown VR code, which pydicom
    reads with a 2-byte length where dcmtk (and PS3.5 7.1.2) expect a 4-byte one; broken sequence items.
    One pass over the top-level elements, unconverted."""
    explicit = transfer_syntax != IMPLICIT_VR
    offsets = transfer_syntax != DEFLATED_EXPLICIT_VR  # a deflated data set's offsets are the inflated ones
    end: int | None = 0
    last = None
    for tag, raw in ds.items():
        if not isinstance(raw, RawDataElement):  # an undefined-length sequence, parsed (leniently) already
            end = None
            if offsets and raw.VR == "SQ" and raw.is_undefined_length:
                _check_sequence(data, tag, getattr(raw, "file_tell", None), None, explicit)
            continue
        if explicit and raw.VR not in _VR_NAMES:
            found = f"({raw.VR!r})" if raw.VR else "(not explicit VR data)"
            raise InstanceRefused(STATUS_CANNOT_UNDERSTAND, f"element {tag} has no valid VR {found}")
        if raw.length == UNDEFINED_LENGTH or raw.value_tell is None:
            end = None  # encapsulated pixel data: its end is not known here
            continue
        end, last = raw.value_tell + raw.length, tag
        if isinstance(raw.value, bytes) and len(raw.value) < raw.length:
            raise InstanceRefused(
                STATUS_CANNOT_UNDERSTAND,
                f"dataset truncated: element {tag} declares {raw.length} bytes, {len(raw.value)} present",
            )
        if offsets and raw.VR == "SQ":
            _check_sequence(data, tag, raw.value_tell, end, explicit)
    if offsets and end and last is not None and 0 < len(data) - end < 8:
        raise InstanceRefused(
            STATUS_CANNOT_UNDERSTAND,
            f"dataset truncated: {len(data) - end} bytes of a cut element header after element {last}",
        )


class _Malformed(Exception):
    """A sequence whose structure other DICOM software cannot parse."""


_ITEM, _ITEM_END, _SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
_LONG_LENGTH_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR",
                              b"UT", b"UV"})
_MAX_NESTING = 16


def _walk_items(buf: bytes, pos: int, limit: int | None, explicit: bool, depth: int) -> int:
    """Check the items of a sequence starting at `pos` (up to `limit`, or to its delimiter when its
    length is undefined); returns the position after it."""
    if depth > _MAX_NESTING:
        raise _Malformed(f"sequences nested deeper than {_MAX_NESTING}")
    while limit is None or pos < limit:
        if pos + 8 > len(buf):
            raise _Malformed("a sequence runs past the end of the data set")
        group, element, length = struct.unpack_from("<HHL", buf, pos)
        pos += 8
        if (group, element) == _SEQUENCE_END and limit is None:
            return pos
        if (group, element) != _ITEM:
            raise _Malformed(f"({group:04X},{element:04X}) found where a sequence item belongs")
        if length == UNDEFINED_LENGTH:
            pos = _walk_elements(buf, pos, None, explicit, depth)
        else:
            end = pos + length
            if end > (len(buf) if limit is None else limit):
                raise _Malformed("a sequence item is longer than its sequence")
            _walk_elements(buf, pos, end, explicit, depth)
            pos = end
    return pos


def _walk_elements(buf: bytes, pos: int, limit: int | None, explicit: bool, depth: int) -> int:
    """Check the elements of one sequence item; returns the position after it."""
    while limit is None or pos < limit:
        if pos + 8 > len(buf):
            raise _Malformed("a sequence item runs past the end of the data set")
        group, element = struct.unpack_from("<HH", buf, pos)
        if (group, element) == _ITEM_END and limit is None:
            return pos + 8
        vr = buf[pos + 4:pos + 6] if explicit else b""
        if not explicit:
            length = struct.unpack_from("<L", buf, pos + 4)[0]
            pos += 8
        elif vr not in _VR_CODES:
            raise _Malformed(f"element ({group:04X},{element:04X}) in a sequence item has no valid VR ({vr!r})")
        elif vr in _LONG_LENGTH_VRS:
            if pos + 12 > len(buf):
                raise _Malformed("a sequence item runs past the end of the data set")
            length = struct.unpack_from("<L", buf, pos + 8)[0]
            pos += 12
        else:
            length = struct.unpack_from("<H", buf, pos + 6)[0]
            pos += 8
        if length == UNDEFINED_LENGTH:
            pos = _walk_items(buf, pos, None, explicit, depth + 1)
            continue
        end = pos + length
        if end > (len(buf) if limit is None else limit):
            raise _Malformed(f"element ({group:04X},{element:04X}) is longer than its sequence item")
        if vr == b"SQ":
            _walk_items(buf, pos, end, explicit, depth + 1)
        pos = end
    return pos


def _check_sequence(data: bytes, tag: Any, start: int | None, end: int | None, explicit: bool) -> None:
    """pydicom reads past broken sequence items (a wrong item tag, an element overrunning its item) that
    dcmtk refuses: walk the sequence's structure in the received bytes."""
    if start is None:
        return
    try:
        _walk_items(data, start, end, explicit, 1)
    except _Malformed as exc:
        raise InstanceRefused(STATUS_CANNOT_UNDERSTAND, f"malformed sequence {tag}: {exc}") from None


def _dataset_start(data: bytes) -> int | None:
    """Offset of the data set in a file written by `received_file` (None for another layout)."""
    if data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00":  # (0002,0000) group length
        return 144 + int.from_bytes(data[140:144], "little")
    return None


def _check_encoding(data: bytes, transfer_syntax: str) -> None:
    """The data set must be encoded as the negotiated transfer syntax says: pydicom silently reads explicit
    VR where implicit was negotiated (and the reverse), dcmtk and most viewers cannot; such a file is
    unreadable, so it is refused rather than acknowledged."""
    if transfer_syntax == DEFLATED_EXPLICIT_VR:
        return  # compressed bytes: inflated (and so checked) by pydicom's reading
    start = _dataset_start(data)
    if start is None or len(data) < start + 8:
        return
    explicit = data[start + 4:start + 6] in _VR_CODES
    implicit_negotiated = transfer_syntax == IMPLICIT_VR
    if not explicit and start + 8 + int.from_bytes(data[start + 4:start + 8], "little") > len(data):
        return  # not a plausible implicit VR element either: garbage, left to the structure checks
    if explicit == implicit_negotiated:
        found = "explicit" if explicit else "implicit"
        raise InstanceRefused(
            STATUS_WRONG_ENCODING,
            f"data set is encoded with {found} VR but the negotiated transfer syntax is "
            f"{UID(transfer_syntax).name} ({transfer_syntax}); stored this way it would be unreadable",
        )


def _cut_short(ds: Dataset, size: int) -> str | None:
    """Why a data set lacking its Study Instance UID looks cut short rather than incomplete by design."""
    if not len(ds):
        return "empty data set: nothing after the file meta information"
    last = max(ds.keys())
    if "PixelData" in ds or last > _TAGS["StudyInstanceUID"]:
        return None
    return (f"data set ends after element {last} ({size} bytes in all) with no Study Instance UID, Series "
            f"Instance UID or Pixel Data: it was cut short")


def _pixel_description(values: _HeaderValues, keyword: str, default: int | None = None) -> int:
    value = values.json(keyword)
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if value is None:
        if default is None:
            raise InstanceRefused(STATUS_NOT_THE_SOP_CLASS, f"Pixel Data without {keyword}")
        return default
    if not isinstance(value, (int, float)):
        raise InstanceRefused(STATUS_CANNOT_UNDERSTAND, f"{keyword} is not a number ({value!r})")
    return int(value)


def _check_pixel_data(ds: Dataset, values: _HeaderValues, transfer_syntax: str, sop_class: str) -> None:
    """Image data must be there and laid out as the header says; a PET or CT slice as its IOD allows
    (refused here, at the sender, rather than failing the analysis later)."""
    pixel = ds.get_item(_PIXEL_DATA)
    rule = _SINGLE_FRAME_LAYOUT.get(sop_class)
    if pixel is None:
        if sop_class in PET_CT_SOP_CLASSES:
            raise InstanceRefused(STATUS_NOT_THE_SOP_CLASS,
                                  f"no Pixel Data: a {UID(sop_class).name} instance must carry its image")
        return
    length = pixel.length if isinstance(pixel, RawDataElement) else len(pixel.value or b"")
    if length == 0:
        raise InstanceRefused(STATUS_PIXEL_DATA_MISMATCH, "Pixel Data is empty (0 bytes)")
    rows, columns = _pixel_description(values, "Rows"), _pixel_description(values, "Columns")
    bits = _pixel_description(values, "BitsAllocated")
    samples = _pixel_description(values, "SamplesPerPixel", 1)
    frames = _pixel_description(values, "NumberOfFrames", 1)
    stored = _pixel_description(values, "BitsStored", bits)
    if rule is not None:
        name, allowed_bits = rule
        if samples != 1:
            raise InstanceRefused(STATUS_NOT_THE_SOP_CLASS,
                                  f"Samples per Pixel {samples}: a {name} slice has one sample per pixel")
        if bits not in allowed_bits:
            allowed = " or ".join(map(str, allowed_bits))
            raise InstanceRefused(STATUS_NOT_THE_SOP_CLASS,
                                  f"Bits Allocated {bits}: a {name} slice has {allowed} bits per pixel")
        if frames != 1:
            raise InstanceRefused(STATUS_NOT_THE_SOP_CLASS,
                                  f"Number of Frames {frames}: a {name} instance holds one slice")
        if not 0 < stored <= bits:
            raise InstanceRefused(STATUS_NOT_THE_SOP_CLASS, f"Bits Stored {stored} with Bits Allocated {bits}")
    if transfer_syntax not in _NATIVE_SYNTAXES or length == UNDEFINED_LENGTH:
        return
    expected = (rows * columns * samples * frames * bits + 7) // 8
    layout = f"Rows x Columns x Samples x Bits Allocated x Frames ({rows}x{columns}x{samples}x{bits}x{frames})"
    if length < expected:
        raise InstanceRefused(STATUS_PIXEL_DATA_MISMATCH,
                              f"pixel data truncated: {length} bytes, {layout} needs {expected}")
    if rule is not None and length > expected + 1:  # one byte pads to even length
        raise InstanceRefused(STATUS_PIXEL_DATA_MISMATCH,
                              f"pixel data of {length} bytes does not match {layout}, which needs {expected}")


def parse_instance(data: bytes, sop_class_uid: str | None = None,
                   sop_instance_uid: str | None = None) -> ParsedInstance:
    """Read a DICOM file's header (pixel values are neither decoded nor converted).

    `sop_class_uid` / `sop_instance_uid` are what the sender's C-STORE request said; the dataset must agree
    with them where it states its own (some real files carry these only in the file meta).
    """
    try:
        ds = dcmread(BytesIO(data), force=False)
        transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
        # Element offsets of a deflated data set are those of the inflated stream.
        _check_encoding(data, transfer_syntax)
        _check_structure(ds, data, transfer_syntax)
        values = _HeaderValues(ds)
        header = {keyword: values.json(keyword) for keyword in HEADER_KEYWORDS}
        header.update(values.radiopharmaceutical())
        study_uid_raw = values.text("StudyInstanceUID")
        series_uid_raw = values.text("SeriesInstanceUID")
        own_class = (values.text("SOPClassUID") or "").strip()
        own_instance = (values.text("SOPInstanceUID") or "").strip()
        meta_class = str(ds.file_meta.get("MediaStorageSOPClassUID") or "").strip()
        meta_instance = str(ds.file_meta.get("MediaStorageSOPInstanceUID") or "").strip()
        patient_name = values.text("PatientName")
        patient_id = values.text("PatientID")
        study_date = values.text("StudyDate")
        patient_birth_date = values.text("PatientBirthDate")
    except InstanceRefused:
        raise
    except Exception as exc:  # corrupt input makes pydicom raise almost anything
        raise InstanceRefused(0xC000, f"unparseable dataset: {type(exc).__name__}: {exc}") from exc

    requested_class = (sop_class_uid or "").strip() or meta_class
    if own_class and requested_class and own_class != requested_class:
        raise InstanceRefused(
            0xA900, f"dataset SOP Class UID {own_class[:64]} disagrees with the request's {requested_class}"
        )
    requested_instance = (sop_instance_uid or "").strip() or meta_instance
    if own_instance and requested_instance and own_instance != requested_instance:
        raise InstanceRefused(
            0xA900,
            f"dataset SOP Instance UID {own_instance[:64]} disagrees with the request's {requested_instance}",
        )
    header = {key: value for key, value in header.items() if value is not None}
    sop_class = _uid(own_class or requested_class, "SOP Class UID")
    header["SOPClassUID"] = sop_class
    if not (study_uid_raw or "").strip():
        cut = _cut_short(ds, len(data))
        if cut is not None:
            raise InstanceRefused(STATUS_CANNOT_UNDERSTAND, cut)
    _check_pixel_data(ds, values, transfer_syntax, sop_class)
    # Salted hashes, never the values: assembly refuses a study whose instances name two patients.
    header.update(identity_hashes(study_uid_raw or "", {
        "PatientID": patient_id, "PatientName": patient_name, "PatientBirthDate": patient_birth_date}))
    return ParsedInstance(
        study_uid=_uid(study_uid_raw, "Study Instance UID"),
        series_uid=_uid(series_uid_raw, "Series Instance UID"),
        sop_instance_uid=_uid(own_instance or requested_instance, "SOP Instance UID"),
        sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax,
        accession_number=_text(header.get("AccessionNumber"), 64),
        patient_id=_text(patient_id, 64),
        patient_name=_text(patient_name, 324),
        study_date=_text(study_date, 8),
        modality=_text(header.get("Modality"), 16),
        frame_of_reference_uid=_text(header.get("FrameOfReferenceUID"), 64),
        instance_number=_as_int(header, "InstanceNumber"),
        image_index=_as_int(header, "ImageIndex"),
        number_of_slices=_as_int(header, "NumberOfSlices"),
        number_of_time_slices=_as_int(header, "NumberOfTimeSlices"),
        slice_position=_slice_position(header),
        header=header,
    )


def _text(value: Any, length: int) -> str | None:
    if value is None:
        return None
    text = clean_text(str(value)).strip()
    return text[:length] or None


# ---------------------------------------------------------------------------------------------- files


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StorageFolder:
    """The folder of received files: `<StudyUID>/<SeriesUID>/<SOPUID>.dcm`, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._known_dirs: set[Path] = set()
        self._lock = threading.Lock()

    def path_for(self, parsed: ParsedInstance, revision: int, sha256: str) -> Path:
        """Revision 1 is `<SOPUID>.dcm`; later ones carry their content hash, so none overwrites another."""
        name = parsed.sop_instance_uid + (".dcm" if revision == 1 else f".{sha256[:16]}.dcm")
        return self.root / parsed.study_uid / parsed.series_uid / name

    def _ensure_directory(self, directory: Path) -> None:
        """Create the series folder and make its entry in the parent durable (once per folder)."""
        if directory in self._known_dirs:
            return
        with self._lock:
            created: list[Path] = []
            current = directory
            while not current.exists() and current != self.root:
                created.append(current)
                current = current.parent
            directory.mkdir(parents=True, exist_ok=True)
            for folder in created:
                _fsync_directory(folder.parent)
            self._known_dirs.add(directory)

    def write_temporary(self, data: bytes) -> tuple[Path, int]:
        """The bytes in a new temporary file under `.incoming/` (not yet flushed) and its open descriptor;
        renamed into place by `place`, flushed through the descriptor."""
        incoming = self.root / INCOMING
        for attempt in (1, 2):
            self._ensure_directory(incoming)
            temporary = incoming / f"{uuid.uuid4().hex}{TEMP_SUFFIX}"
            try:
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
                break
            except FileNotFoundError:
                # The folder was removed since it was created: make it again.
                self._known_dirs.discard(incoming)
                if attempt == 2:
                    raise
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except BaseException:
            os.close(fd)
            temporary.unlink(missing_ok=True)
            raise
        return temporary, fd

    def place(self, temporary: Path, path: Path) -> None:
        """Rename a flushed temporary file to its final name; durable once `sync_folder(path)` returns."""
        self._ensure_directory(path.parent)
        try:
            os.replace(temporary, path)
        except FileNotFoundError:
            self._known_dirs.discard(path.parent)  # series folder removed meanwhile (e.g. by retention)
            self._ensure_directory(path.parent)
            os.replace(temporary, path)

    @staticmethod
    def sync_folder(path: Path) -> None:
        """Make the rename of `path` durable."""
        _fsync_directory(path.parent)


# ---------------------------------------------------------------------------------------------- rows


@dataclass
class StoreOutcome:
    """What happened to one received instance."""

    kind: str  # "stored", "duplicate", "revised" or "restored"
    path: Path
    revision: int


class Staged:
    """A received instance being written to a temporary file, flushed and hashed in the background.

    Three stages, each waited for only where it is needed: `written()` once the bytes are in the file
    (enough to rename it into place), `digest()` once hashed, `flushed()` once the file's data is on disk.
    """

    def __init__(self, folder: StorageFolder, data: bytes, executor: ThreadPoolExecutor) -> None:
        self._written: Future[Path] = Future()
        self.placed = False  # renamed into place: nothing to clean up
        self._flushed = executor.submit(self._write_and_flush, folder, data)
        self._digest = executor.submit(content_digest, data)

    def _write_and_flush(self, folder: StorageFolder, data: bytes) -> None:
        try:
            temporary, fd = folder.write_temporary(data)
        except BaseException as exc:
            self._written.set_exception(exc)
            raise
        self._written.set_result(temporary)
        try:
            os.fsync(fd)  # also valid after the file was renamed: the descriptor follows the file
        finally:
            os.close(fd)

    def written(self) -> Path:
        """The temporary file holding all the bytes (maybe not yet on disk); raises what writing raised."""
        return self._written.result()

    def digest(self) -> str:
        return self._digest.result()

    def flushed(self) -> None:
        """Returns once the file's bytes are on disk; raises what writing or flushing raised."""
        self._flushed.result()

    def settle(self) -> Path | None:
        """Wait for the background work, whatever its outcome; the temporary file's path if it was made."""
        background: list[Future[Any]] = [self._flushed, self._digest]
        futures_wait(background)
        return None if self._written.exception() is not None else self._written.result()


def _meta_element(element: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    if len(value) % 2:
        value += pad
    return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value


_META_VERSION = struct.pack("<HH2sHI", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"
_META_IMPLEMENTATION = (
    _meta_element(0x0012, b"UI", PYNETDICOM_IMPLEMENTATION_UID.encode("ascii"), b"\x00")
    + _meta_element(0x0013, b"SH", PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" ")
)


def received_file(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                  dataset: bytes | memoryview) -> bytes:
    """A received data set in the DICOM file format, byte for byte what pynetdicom's
    `Event.encoded_dataset()` returns; that goes through pydicom's general encoder, ~0.2 ms per instance
    for seven fixed elements."""
    elements = (_META_VERSION
                + _meta_element(0x0002, b"UI", sop_class_uid.encode("latin-1", "replace"), b"\x00")
                + _meta_element(0x0003, b"UI", sop_instance_uid.encode("latin-1", "replace"), b"\x00")
                + _meta_element(0x0010, b"UI", transfer_syntax_uid.encode("latin-1", "replace"), b"\x00")
                + _META_IMPLEMENTATION)
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(elements))
    return b"".join((b"\x00" * 128, b"DICM", group_length, elements, dataset))


def content_digest(data: bytes) -> str:
    """sha256 of the data set as sent, without the file meta the receiver adds (whose implementation
    UID and source AE title differ between senders of the same instance)."""
    view = memoryview(data)
    if data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00":  # (0002,0000) group length
        view = view[144 + int.from_bytes(data[140:144], "little"):]
    return hashlib.sha256(view).hexdigest()


@dataclass
class Caller:
    """Who sent the instance, for the study row and the audit trail."""

    ae_title: str
    host: str


class InstanceStore:
    """Stores instances durably and records them; one per receiving process, shared by associations."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.folder = StorageFolder(settings.storage.directory)
        self.engine = sessions.kw["bind"]
        # Three background tasks per instance in flight (write+flush, hash, folder flush), none waiting
        # for another, so any pool size is deadlock-free; this one never makes an association queue.
        self._syncer = ThreadPoolExecutor(max_workers=3 * settings.node.max_associations + 4,
                                          thread_name_prefix="storage-flush")
        # Striped locks: one SOP Instance UID is never handled by two associations at once.
        self._sop_locks = [threading.Lock() for _ in range(64)]
        self._commits = GroupCommit(self.engine)

    def close(self) -> None:
        """Wait for folder flushes still running (only during shutdown)."""
        self._syncer.shutdown(wait=True)

    def _sop_lock(self, sop_instance_uid: str) -> threading.Lock:
        return self._sop_locks[hash(sop_instance_uid) % len(self._sop_locks)]

    @contextmanager
    def staging(self, data: bytes) -> Iterator[Staged]:
        """Start writing, flushing and hashing the received bytes in the background right away, so that
        this work overlaps header parsing; the temporary file is removed on exit unless it was placed."""
        staged = Staged(self.folder, data, self._syncer)
        try:
            yield staged
        finally:
            temporary = staged.settle()
            if temporary is not None and not staged.placed:
                temporary.unlink(missing_ok=True)

    def store(self, parsed: ParsedInstance, data: bytes, caller: Caller, study_ids: dict[str, int],
              staged: Staged) -> StoreOutcome:
        """Place the staged file and commit its row; returns only when both are durable.

        `study_ids` caches study_uid -> row id for the calling association, sparing a lookup per instance.
        """
        with self._sop_lock(parsed.sop_instance_uid):
            first_path = self.folder.path_for(parsed, 1, "")
            if not os.path.lexists(first_path):
                outcome = self._store_new(parsed, data, caller, study_ids, staged, first_path)
                if outcome is not None:
                    return outcome
            return self._store_known(parsed, data, caller, study_ids, staged)

    def _store_new(self, parsed: ParsedInstance, data: bytes, caller: Caller, study_ids: dict[str, int],
                   staged: Staged, path: Path) -> StoreOutcome | None:
        """The common case, an instance never seen (its revision-1 file does not exist): no lookup first.

        The complete file is renamed into place before its row is committed, so no row ever points to a
        missing or partly written file while the node runs. The three disk flushes (file data, folder
        entry, database commit) then run at once, and success is answered only after all three: the sum
        of their latencies would otherwise dominate the time per instance. A power loss before the
        answer can leave a committed row whose file is short or empty (ext4/XFS never show a full-length
        file with other content): `reconcile_storage` flags it by its size, and the re-send the
        unanswered sender makes restores it. Returns None when a row for revision 1 exists after all
        (its file went missing); the general path then handles the instance.
        """
        temporary = staged.written()
        self.folder.place(temporary, path)
        staged.placed = True
        folder_synced = self._syncer.submit(self.folder.sync_folder, path)
        try:
            self._record(parsed, caller, study_ids, path, len(data), staged.digest(), 1, None)
        except IntegrityError:
            futures_wait([folder_synced])
            os.replace(path, temporary)  # back to staging, as if never placed
            staged.placed = False
            return None
        except BaseException:
            futures_wait([folder_synced])
            path.unlink(missing_ok=True)
            raise
        try:
            staged.flushed()
            folder_synced.result()
        except BaseException as exc:
            self._unflushed(parsed, caller, path, exc)
            raise
        return StoreOutcome("stored", path, 1)

    def _unflushed(self, parsed: ParsedInstance, caller: Caller, path: Path, exc: BaseException) -> None:
        """A committed row whose file could not be flushed: the instance is refused, so its file goes and
        its row is flagged missing; the sender's re-send restores it through the usual path."""
        path.unlink(missing_ok=True)

        def flag(connection: Connection) -> None:
            connection.execute(update(Instance).where(Instance.path == str(path)).values(missing_file=True))
            with Session(bind=connection) as session:  # joins the connection's transaction
                audit.record(session, "instance", "file-missing", outcome="error",
                             reason=clean_text(f"stored file could not be flushed: {exc}"),
                             study_uid=parsed.study_uid, series_uid=parsed.series_uid,
                             sop_instance_uid=parsed.sop_instance_uid, actor=caller.ae_title,
                             peer=caller.host, path=str(path))
                session.flush()

        self._commits.run(flag)

    def _store_known(self, parsed: ParsedInstance, data: bytes, caller: Caller, study_ids: dict[str, int],
                     staged: Staged) -> StoreOutcome:
        """An instance with an earlier revision: identical content is a duplicate (or restores a missing
        file), different content a new revision. Rare, so kept simple: the file is flushed first."""
        with self.engine.connect() as connection:
            current = connection.execute(_CURRENT_REVISION, {"sop": parsed.sop_instance_uid}).first()
        temporary = staged.written()
        sha256 = staged.digest()
        staged.flushed()
        if current is not None and current.sha256 == sha256:
            if not current.missing_file and _intact(Path(current.path), current.size_bytes):
                return StoreOutcome("duplicate", Path(current.path), current.revision)
            outcome = self._restore(parsed, temporary, caller, current.id, Path(current.path),
                                    current.revision)
            staged.placed = True
            return outcome
        revision = 1 if current is None else current.revision + 1
        path = self.folder.path_for(parsed, revision, sha256)
        self.folder.place(temporary, path)
        staged.placed = True
        # The folder fsync making the rename durable runs while the row is committed; success is
        # answered only after both.
        folder_synced = self._syncer.submit(self.folder.sync_folder, path)
        try:
            self._record(parsed, caller, study_ids, path, len(data), sha256, revision,
                         None if current is None else current.id)
        except BaseException:
            futures_wait([folder_synced])
            path.unlink(missing_ok=True)
            raise
        folder_synced.result()
        return StoreOutcome("stored" if revision == 1 else "revised", path, revision)

    def _restore(self, parsed: ParsedInstance, temporary: Path, caller: Caller, instance_id: int,
                 path: Path, revision: int) -> StoreOutcome:
        """The same content again for a row whose file went missing: put the file back."""
        self.folder.place(temporary, path)
        self.folder.sync_folder(path)

        def unflag(connection: Connection) -> None:
            connection.execute(update(Instance).where(Instance.id == instance_id).values(missing_file=False))
            with Session(bind=connection) as session:  # joins the connection's transaction
                audit.record(session, "instance", "restored", reason="file was missing; same content re-sent",
                             study_uid=parsed.study_uid, series_uid=parsed.series_uid,
                             sop_instance_uid=parsed.sop_instance_uid, actor=caller.ae_title,
                             peer=caller.host)
                session.flush()

        self._commits.run(unflag)
        return StoreOutcome("restored", path, revision)

    def study_id(self, parsed: ParsedInstance, caller: Caller, study_ids: dict[str, int]) -> int:
        """The study's row id, creating the row (own short transaction) on its first instance."""
        cached = study_ids.get(parsed.study_uid)
        if cached is None:
            cached = study_ids[parsed.study_uid] = ensure_study(self.sessions, parsed, caller)
        return cached

    def _record(self, parsed: ParsedInstance, caller: Caller, study_ids: dict[str, int], path: Path,
                size: int, sha256: str, revision: int, previous_id: int | None) -> None:
        """Commit the instance row and the study's update (see `GroupCommit`); everything else (file I/O,
        hashing, parsing) happens outside the transaction. The study update comes first so SQLite takes
        its write lock at once; plain Core statements keep the per-instance overhead down, and the audit
        row of a revision goes through a session bound to the same connection and transaction.
        """
        for attempt in (1, 2):
            study_id = self.study_id(parsed, caller, study_ids)
            now = utcnow()
            values = _instance_values(parsed, study_id, path, size, sha256, revision, caller.ae_title, now)
            touch = {
                "study_id": study_id, "accession_number": parsed.accession_number,
                "patient_id": parsed.patient_id, "patient_name": parsed.patient_name,
                "study_date": parsed.study_date, "calling_ae": caller.ae_title[:16],
                "calling_host": caller.host[:64], "now": now, "added": 1 if previous_id is None else 0,
            }

            write = partial(_write_rows, touch=touch, values=values, previous_id=previous_id,
                            audit_fields={"study_uid": parsed.study_uid, "series_uid": parsed.series_uid,
                                          "sop_instance_uid": parsed.sop_instance_uid,
                                          "actor": caller.ae_title, "peer": caller.host,
                                          "revision": revision, "sha256": sha256})
            try:
                self._commits.run(write)
                return
            except _StudyVanished:
                study_ids.pop(parsed.study_uid, None)
                if attempt == 2:
                    raise RuntimeError(f"study row for {parsed.study_uid} vanished while storing") from None


def _write_rows(connection: Connection, touch: dict[str, Any], values: dict[str, Any], previous_id: int | None,
                audit_fields: dict[str, Any]) -> None:
    """One instance's statements: touch the study, retire the previous revision (audited), insert."""
    if connection.execute(_TOUCH_STUDY, touch).rowcount == 0:
        raise _StudyVanished(audit_fields["study_uid"])
    if previous_id is not None:
        connection.execute(update(Instance).where(Instance.id == previous_id).values(current=False))
        with Session(bind=connection) as session:  # joins the connection's transaction
            audit.record(session, "instance", "revised", reason="re-sent with different content", **audit_fields)
            session.flush()
    connection.execute(_INSERT_INSTANCE, values)


class _StudyVanished(Exception):
    """The cached study row id no longer exists (the study was deleted meanwhile)."""


class _Ticket:
    """One transaction's statements waiting in a `GroupCommit`."""

    __slots__ = ("done", "error", "work")

    def __init__(self, work: Callable[[Connection], None]) -> None:
        self.work = work
        self.done = False
        self.error: BaseException | None = None


class GroupCommit:
    """Runs the row writes of instances arriving at the same moment on several associations in one
    transaction: one commit, one disk flush for all of them (database group commit).

    A commit takes a disk flush (~0.2-1 ms) and SQLite lets one writer in at a time, so with several
    associations each commit used to wait for the others in turn. Here each writer queues its
    statements; whoever gets the leader lock commits everything queued so far, and the others find theirs
    done when they get the lock. Queueing on our own lock also hands the database over the moment a commit
    ends, where SQLite's busy handler would sleep for milliseconds. If a batch fails, its members are
    retried one transaction each, so one bad row only fails its own instance. Every caller returns only
    after its own statements are committed.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._leader = threading.Lock()
        self._queue_lock = threading.Lock()
        self._pending: list[_Ticket] = []

    def run(self, work: Callable[[Connection], None]) -> None:
        """Execute `work` in a committed transaction (possibly shared with others); raises what it raised."""
        ticket = _Ticket(work)
        with self._queue_lock:
            self._pending.append(ticket)
        with self._leader:
            if not ticket.done:
                with self._queue_lock:
                    batch, self._pending = self._pending, []
                self._commit(batch)
        if ticket.error is not None:
            raise ticket.error

    def _commit(self, batch: list[_Ticket]) -> None:
        if len(batch) > 1:
            try:
                with self._engine.begin() as connection:
                    for ticket in batch:
                        ticket.work(connection)
            except Exception:
                log.debug("group commit failed; committing its members one by one", exc_info=True)
            else:
                for ticket in batch:
                    ticket.done = True
                return
        for ticket in batch:
            try:
                with self._engine.begin() as connection:
                    ticket.work(connection)
            except Exception as exc:  # noqa: BLE001 - handed to the caller whose statements failed
                ticket.error = exc
            ticket.done = True


def _intact(path: Path, size: int) -> bool:
    """The stored file is there with its recorded length (a flush cut short by power loss shortens it)."""
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False


# Statements built once (SQLAlchemy caches their compiled form): they run for every received instance.
_CURRENT_REVISION = (
    select(Instance.id, Instance.sha256, Instance.revision, Instance.path, Instance.missing_file,
           Instance.size_bytes)
    .where(Instance.sop_instance_uid == bindparam("sop"), Instance.current.is_(True))
)
_TOUCH_STUDY = update(Study).where(Study.id == bindparam("study_id")).values(
    accession_number=bindparam("accession_number"), patient_id=bindparam("patient_id"),
    patient_name=bindparam("patient_name"), study_date=bindparam("study_date"),
    calling_ae=bindparam("calling_ae"), calling_host=bindparam("calling_host"),
    last_received_at=bindparam("now"), instance_count=Study.instance_count + bindparam("added"),
)
_INSERT_INSTANCE = insert(Instance)


def _instance_values(parsed: ParsedInstance, study_id: int, path: Path, size: int, sha256: str,
                     revision: int, calling_ae: str | None, now: dt.datetime) -> dict[str, Any]:
    return {
        "study_id": study_id, "study_uid": parsed.study_uid, "series_uid": parsed.series_uid,
        "sop_instance_uid": parsed.sop_instance_uid, "sop_class_uid": parsed.sop_class_uid,
        "transfer_syntax_uid": parsed.transfer_syntax_uid[:64], "revision": revision, "current": True,
        "path": str(path), "size_bytes": size, "sha256": sha256, "analysable": parsed.analysable,
        "missing_file": False, "modality": parsed.modality,
        "frame_of_reference_uid": parsed.frame_of_reference_uid, "instance_number": parsed.instance_number,
        "image_index": parsed.image_index, "number_of_slices": parsed.number_of_slices,
        "number_of_time_slices": parsed.number_of_time_slices, "slice_position": parsed.slice_position,
        "header": parsed.header, "calling_ae": (calling_ae or "")[:16] or None, "received_at": now,
    }


# ---------------------------------------------------------------------------------------------- start-up


def _walk_storage(root: Path) -> Iterator[Path]:
    for directory, _subdirs, files in os.walk(root):
        for name in files:
            yield Path(directory) / name


def reconcile_storage(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """At start-up: adopt stored files without rows, flag rows without (intact) files, remove temporary
    files.

    After a crash the folder and the database can disagree only in these ways, because a complete file is
    renamed into place before its row is committed, and the sender is answered only after both are on
    disk; a file whose flush a power loss cut short is shorter than its row says.
    """
    root = settings.storage.directory
    root.mkdir(parents=True, exist_ok=True)
    with sessions() as session:
        rows = session.execute(
            select(Instance.id, Instance.path, Instance.missing_file, Instance.size_bytes)).all()
    known = {row.path for row in rows}
    adopted = removed = flagged = 0
    orphans: list[Path] = []
    for path in _walk_storage(root):
        if path.name.endswith(TEMP_SUFFIX):
            path.unlink(missing_ok=True)
            removed += 1
            with sessions.begin() as session:
                audit.record(session, "instance", "temporary-removed",
                             reason="left over by an interrupted write", path=str(path))
        elif path.suffix == ".dcm" and str(path) not in known:
            orphans.append(path)
    for path in sorted(orphans, key=lambda p: p.stat().st_mtime):
        adopted += _adopt(path, sessions)
    for row in rows:
        intact = _intact(Path(row.path), row.size_bytes)
        if intact == (not row.missing_file):
            continue
        reason = None
        if not intact:
            reason = ("stored file shorter than recorded (flush cut short)" if os.path.exists(row.path)
                      else "stored file not found at start-up")
        with sessions.begin() as session:
            session.execute(update(Instance).where(Instance.id == row.id).values(missing_file=not intact))
            audit.record(session, "instance", "file-missing" if not intact else "file-restored",
                         outcome="error" if not intact else "ok", reason=reason,
                         path=row.path, instance_id=row.id)
        flagged += 1 if not intact else 0
    log.info("storage reconciled", extra={"adopted": adopted, "temporary_removed": removed,
                                          "missing_files": flagged, "rows": len(rows)})


def ensure_study(sessions: sessionmaker[Session], parsed: ParsedInstance, caller: Caller | None) -> int:
    """The study's row id; a missing row is created (state "receiving") in its own short transaction."""
    with sessions() as session:
        found = session.execute(select(Study.id).where(Study.study_uid == parsed.study_uid)).scalar()
    if found is not None:
        return int(found)
    now = utcnow()
    try:
        with sessions.begin() as session:
            study_id = session.execute(insert(Study).values(
                study_uid=parsed.study_uid, accession_number=parsed.accession_number,
                patient_id=parsed.patient_id, patient_name=parsed.patient_name, study_date=parsed.study_date,
                calling_ae=caller.ae_title[:16] if caller else None,
                calling_host=caller.host[:64] if caller else None, instance_count=0,
                first_received_at=now, last_received_at=now, state_changed_at=now,
            ).returning(Study.id)).scalar_one()
            audit.record(session, "study", "created", reason=None if caller else "adopted at start-up",
                         study_uid=parsed.study_uid, actor=caller.ae_title if caller else None,
                         peer=caller.host if caller else None)
            return int(study_id)
    except IntegrityError:
        # Another association created it at the same moment (unique study_uid): use that row.
        with sessions() as session:
            found = session.execute(select(Study.id).where(Study.study_uid == parsed.study_uid)).scalar_one()
            return int(found)


def _adopt(path: Path, sessions: sessionmaker[Session]) -> int:
    """A file renamed into place whose row was never committed (crash in between): give it its row."""
    data = path.read_bytes()
    try:
        parsed = parse_instance(data)
    except InstanceRefused as exc:
        with sessions.begin() as session:
            audit.record(session, "instance", "adopt-failed", outcome="error", reason=exc.reason,
                         path=str(path))
        log.warning("stored file cannot be adopted", extra={"path": str(path), "reason": exc.reason})
        return 0
    sha256 = content_digest(data)
    with sessions() as session:
        latest = session.execute(
            select(Instance.sha256, Instance.revision)
            .where(Instance.sop_instance_uid == parsed.sop_instance_uid)
            .order_by(Instance.revision.desc())
        ).first()
    if latest is not None and latest.sha256 == sha256:
        return 0
    revision = 1 if latest is None else latest.revision + 1
    study_id = ensure_study(sessions, parsed, None)
    now = utcnow()
    with sessions.begin() as session:
        session.execute(update(Study).where(Study.id == study_id).values(
            last_received_at=now, instance_count=Study.instance_count + (1 if latest is None else 0)))
        session.execute(update(Instance).where(Instance.sop_instance_uid == parsed.sop_instance_uid)
                        .values(current=False))
        session.execute(insert(Instance).values(**_instance_values(
            parsed, study_id, path, len(data), sha256, revision, None, now)))
        audit.record(session, "instance", "adopted", reason="file stored without a row (interrupted receive)",
                     study_uid=parsed.study_uid, series_uid=parsed.series_uid,
                     sop_instance_uid=parsed.sop_instance_uid, path=str(path), revision=revision)
    return 1
