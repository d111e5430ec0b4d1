"""What the node keeps of a received instance's header, and whether the instance is one it will store.

`parse_instance` reads the header without decoding or converting pixel values, so the receiving process
stays light; it refuses (`InstanceRefused`, with a specific status and reason) what later stages or other
DICOM software could not read: identifiers missing or contradicting the request, bytes encoded otherwise
than negotiated, a PET or CT slice whose pixel data does not match its description.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any, ClassVar

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    EnhancedPETImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedPETImageStorage,
    PositronEmissionTomographyImageStorage,
)

from dicom_node.patient_identity import identity_hashes
from dicom_node.store.encoding import UNDEFINED_LENGTH, check_encoding, check_structure
from dicom_node.store.status import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_NOT_THE_SOP_CLASS,
    STATUS_PIXEL_DATA_MISMATCH,
    InstanceRefused,
)

# Classes the analysis understands; the enhanced ones are stored but later stages do not read them.
ANALYSABLE_SOP_CLASSES = frozenset({PositronEmissionTomographyImageStorage, CTImageStorage})
PET_CT_SOP_CLASSES = ANALYSABLE_SOP_CLASSES | {
    EnhancedPETImageStorage,
    EnhancedCTImageStorage,
    LegacyConvertedEnhancedPETImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
}

# Header fields copied into Instance.header; the assembly stage relies on exactly these names.
HEADER_KEYWORDS = (
    "Modality", "SOPClassUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate",
    "SeriesTime", "AcquisitionDate", "AcquisitionTime", "ImageType", "FrameOfReferenceUID", "InstanceNumber",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns",
    "ImageIndex", "NumberOfSlices", "NumberOfTimeSlices", "SeriesType", "CorrectedImage", "Units",
    "DecayCorrection", "AccessionNumber", "StudyDescription", "AdditionalPatientHistory",
    "RequestedProcedureComments", "BodyPartExamined", "GantryDetectorTilt", "BitsAllocated", "SamplesPerPixel",
    "LossyImageCompression",
)
_TAGS = {keyword: Tag(keyword)
         for keyword in (*HEADER_KEYWORDS, "Radiopharmaceutical", "RadionuclideHalfLife", "CodeMeaning",
                         "RadiopharmaceuticalInformationSequence", "StudyInstanceUID", "SOPInstanceUID",
                         "PatientName", "PatientID", "StudyDate", "PatientBirthDate",
                         "Rows", "Columns", "BitsAllocated", "BitsStored", "SamplesPerPixel", "NumberOfFrames")}
# Native (unencapsulated) transfer syntaxes, whose pixel data length can be checked against the header.
_NATIVE_SYNTAXES = frozenset({ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian,
                              ExplicitVRBigEndian})
_PIXEL_DATA = Tag("PixelData")
# Image Pixel rules of the single-frame PET and CT IODs (PS3.3 C.8.2.1, C.8.9.4) the analysis relies on.
_SINGLE_FRAME_LAYOUT = {CTImageStorage: ("CT Image Storage", (16,)),
                        PositronEmissionTomographyImageStorage: ("PET Image Storage", (16, 32))}
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


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
            raise InstanceRefused(STATUS_CANNOT_UNDERSTAND, f"{keyword} is not a finite number ({value!r})")
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
        raise InstanceRefused(STATUS_CANNOT_UNDERSTAND, f"cannot read {keyword}: {exc}") from exc
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
        raise InstanceRefused(STATUS_CANNOT_UNDERSTAND, f"cannot read {keyword}: {exc}") from exc


def _as_int(header: dict[str, Any], keyword: str) -> int | None:
    value = header.get(keyword)
    if value is None:
        return None
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, (int, float)):
        raise InstanceRefused(STATUS_CANNOT_UNDERSTAND, f"{keyword} is not a number ({value!r})")
    if abs(value) >= 2**31:
        raise InstanceRefused(STATUS_CANNOT_UNDERSTAND, f"{keyword} out of range ({value!r})")
    return int(value)


def _numbers(header: dict[str, Any], keyword: str, count: int) -> list[float] | None:
    value = header.get(keyword)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != count or not all(
        isinstance(v, (int, float)) for v in value
    ):
        raise InstanceRefused(STATUS_CANNOT_UNDERSTAND, f"{keyword} must be {count} numbers (got {value!r})")
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
        check_encoding(data, transfer_syntax)
        check_structure(ds, data, transfer_syntax)
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
        raise InstanceRefused(STATUS_CANNOT_UNDERSTAND,
                              f"unparseable dataset: {type(exc).__name__}: {exc}") from exc

    requested_class = (sop_class_uid or "").strip() or meta_class
    if own_class and requested_class and own_class != requested_class:
        raise InstanceRefused(
            STATUS_NOT_THE_SOP_CLASS,
            f"dataset SOP Class UID {own_class[:64]} disagrees with the request's {requested_class}",
        )
    requested_instance = (sop_instance_uid or "").strip() or meta_instance
    if own_instance and requested_instance and own_instance != requested_instance:
        raise InstanceRefused(
            STATUS_NOT_THE_SOP_CLASS,
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
