"""CT Image and PET Image objects of a synthetic study, in three vendor flavours and four transfer syntaxes.

Each series has one base dataset holding what every slice shares. For the uncompressed syntaxes its
elements are encoded once (`SeriesWriter`); a slice encodes only its own few elements, and its pixels are
written as they are, so writing hundreds of slices costs little more than the I/O. The compressed syntaxes
go through pydicom's encoders.
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr, write_data_element
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    PositronEmissionTomographyImageStorage,
    PYDICOM_IMPLEMENTATION_UID,
    RLELossless,
    UID,
)
from pydicom.valuerep import format_number_as_ds

from dicom_node.synth.acquisition import Acquisition

TRANSFER_SYNTAXES: dict[str, UID] = {
    "explicit": ExplicitVRLittleEndian,
    "implicit": ImplicitVRLittleEndian,
    "jpeg2000": JPEG2000Lossless,
    "rle": RLELossless,
}
GE_PRIVATE_CREATOR = "GEMS_PETD_01"
PHILIPS_PRIVATE_CREATOR = "Philips PET Private Group"
CT_BITS_STORED = 12
CT_INTERCEPT = -1024.0


@dataclass(frozen=True)
class Vendor:
    key: str
    manufacturer: str
    model: str
    software: str
    station: str
    pet_units: str
    reconstruction: str
    ct_kernel: str


VENDORS: dict[str, Vendor] = {
    "siemens": Vendor("siemens", "SIEMENS", "Biograph Vision 600", "VG80B", "SYNTHPETCT1", "BQML",
                      "PSF+TOF 4i5s", "Br38f"),
    "ge": Vendor("ge", "GE MEDICAL SYSTEMS", "Discovery MI", "pet_coreload.52", "SYNTHPETCT2", "BQML",
                 "VPFXS", "STANDARD"),
    "philips": Vendor("philips", "Philips Medical Systems", "Vereos PET/CT", "3.5.0", "SYNTHPETCT3", "CNTS",
                      "BLOB-OS-TF", "B"),
}


@dataclass(frozen=True)
class StudyHeader:
    """Everything both series of a study state identically, plus the per-study choices."""

    study_uid: str
    frame_of_reference_uid: str
    ct_series_uid: str
    pet_series_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    accession_number: str
    study_id: str
    history: str | None
    vendor: Vendor
    tracer: str
    acquisition: Acquisition
    transfer_syntax: str
    body_part: str
    tracer_as_code: bool = False
    """Name the tracer only by its Radiopharmaceutical Code Sequence (CID 4021), with no text."""


TRACER_CODES: dict[str, tuple[str, str, str]] = {
    "psma1007": ("126758", "DCM", "PSMA-1007 F^18^"),
    "psma11": ("C118961", "NCIt", "PSMA-11 Ga^68^"),
    "dcfpyl": ("C116352", "NCIt", "Piflufolastat F^18^"),
    "fdg": ("35321007", "SCT", "Fluorodeoxyglucose F^18^"),
}
"""Codes of DICOM PS3.16 CID 4021 (PET Radiopharmaceutical) for the tracers the generator writes as codes."""


def tracer_code(tracer: str) -> tuple[str, str, str] | None:
    """The CID 4021 code of a tracer name, when the generator knows one."""
    compact = "".join(c for c in tracer.lower() if c.isalnum())
    return next((code for key, code in TRACER_CODES.items() if key in compact), None)


def _date(moment: datetime) -> str:
    return moment.strftime("%Y%m%d")


def _time(moment: datetime) -> str:
    return moment.strftime("%H%M%S")


def ds_text(value: float) -> str:
    """A Decimal String of at most 16 characters, as precise as that allows."""
    return format_number_as_ds(float(value))


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _common(header: StudyHeader, modality_time: datetime) -> Dataset:
    acq = header.acquisition
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyDate = _date(acq.study_time)
    ds.StudyTime = _time(acq.study_time)
    ds.AccessionNumber = header.accession_number
    ds.ReferringPhysicianName = "SYNTH^REFERRER"
    ds.StudyDescription = "PET-CT PSMA whole body" if header.body_part != "PELVIS" else "PET-CT PSMA pelvis"
    ds.Manufacturer = header.vendor.manufacturer
    ds.InstitutionName = "Synthetic Research Hospital"
    ds.StationName = header.vendor.station
    ds.ManufacturerModelName = header.vendor.model
    ds.SoftwareVersions = header.vendor.software
    ds.DeviceSerialNumber = "SYNTH0001"
    ds.PatientName = header.patient_name
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = header.patient_birth_date
    ds.PatientSex = "M"
    ds.PatientAge = f"{int(acq.injection.year - int(header.patient_birth_date[:4])):03d}Y"
    ds.PatientWeight = ds_text(acq.weight_kg)
    ds.PatientSize = "1.78"
    if header.history is not None:
        ds.AdditionalPatientHistory = header.history
    ds.BodyPartExamined = header.body_part
    ds.StudyInstanceUID = header.study_uid
    ds.StudyID = header.study_id
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.ContentDate = _date(modality_time)
    ds.ContentTime = _time(modality_time)
    return ds


def ct_base(header: StudyHeader, rows: int, columns: int, pixel_mm: float, slice_mm: float) -> Dataset:
    acq = header.acquisition
    ds = _common(header, acq.ct_time)
    ds.SOPClassUID = CTImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Modality = "CT"
    ds.PatientPosition = "HFS"
    ds.SeriesInstanceUID = header.ct_series_uid
    ds.SeriesNumber = 2
    ds.SeriesDescription = "CT AC low dose 3.0"
    ds.SeriesDate = _date(acq.ct_time)
    ds.SeriesTime = _time(acq.ct_time)
    ds.AcquisitionDate = _date(acq.ct_time)
    ds.AcquisitionTime = _time(acq.ct_time)
    ds.AcquisitionNumber = 1
    ds.ScanOptions = "HELICAL MODE"
    ds.KVP = "120"
    ds.XRayTubeCurrent = 80
    ds.ExposureTime = 500
    ds.ConvolutionKernel = header.vendor.ct_kernel
    ds.SliceThickness = ds_text(slice_mm)
    ds.SpacingBetweenSlices = ds_text(slice_mm)
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = ds_text(pixel_mm * columns)
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [ds_text(pixel_mm), ds_text(pixel_mm)]
    ds.BitsStored = CT_BITS_STORED
    ds.HighBit = CT_BITS_STORED - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = ds_text(CT_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    return ds


def pet_base(header: StudyHeader, rows: int, columns: int, pixel_mm: float, slice_mm: float,
             n_slices: int, philips_scale: tuple[float, float] | None) -> Dataset:
    """The shared PET headers; `philips_scale` = (SUV scale factor, activity concentration scale factor)."""
    acq = header.acquisition
    vendor = header.vendor
    ds = _common(header, acq.scan_start)
    ds.SOPClassUID = PositronEmissionTomographyImageStorage
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Modality = "PT"
    ds.SeriesInstanceUID = header.pet_series_uid
    ds.SeriesNumber = 3
    ds.SeriesDescription = f"PET {header.tracer} WB AC"
    series_time = acq.scan_start
    if vendor.key == "ge":
        # GE stamps the series when the reconstruction is made, after the acquisition.
        series_time = acq.scan_end + timedelta(minutes=9)
        ds.private_block(0x0009, GE_PRIVATE_CREATOR, create=True).add_new(
            0x0D, "DT", acq.scan_start.strftime("%Y%m%d%H%M%S.000000"))
    ds.SeriesDate = _date(series_time)
    ds.SeriesTime = _time(series_time)
    ds.Units = vendor.pet_units
    ds.CountsSource = "EMISSION"
    ds.SeriesType = ["WHOLE BODY", "IMAGE"]
    ds.NumberOfSlices = n_slices
    ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"]
    ds.RandomsCorrectionMethod = "DLYD"
    ds.AttenuationCorrectionMethod = "measured,CT-based"
    ds.ScatterCorrectionMethod = "Model-based"
    ds.DecayCorrection = "START"
    ds.ReconstructionMethod = vendor.reconstruction
    ds.CollimatorType = "NONE"
    ds.AxialAcceptance = "50"
    ds.AxialMash = [5, 6]
    ds.CoincidenceWindowWidth = "4.73"
    ds.EnergyWindowRangeSequence = Sequence([_energy_window()])
    nuclide = acq.nuclide
    radio = Dataset()
    if not header.tracer_as_code:
        radio.Radiopharmaceutical = header.tracer
    radio.RadiopharmaceuticalStartTime = _time(acq.injection)
    radio.RadiopharmaceuticalStartDateTime = acq.injection.strftime("%Y%m%d%H%M%S")
    radio.RadionuclideTotalDose = ds_text(acq.dose_bq)
    radio.RadionuclideHalfLife = ds_text(nuclide.half_life_s)
    radio.RadionuclidePositronFraction = "0.9673" if nuclide.name == "F-18" else "0.8891"
    radio.RadionuclideCodeSequence = Sequence([_code(nuclide.code_value, nuclide.code_scheme,
                                                     nuclide.code_meaning)])
    code = tracer_code(header.tracer)
    if code is not None and (header.tracer_as_code or code[0] == TRACER_CODES["fdg"][0]):
        radio.RadiopharmaceuticalCodeSequence = Sequence([_code(*code)])
    ds.RadiopharmaceuticalInformationSequence = Sequence([radio])
    orientation = _code("102538003", "SCT", "recumbent")
    orientation.PatientOrientationModifierCodeSequence = Sequence([_code("40199007", "SCT", "supine")])
    ds.PatientOrientationCodeSequence = Sequence([orientation])
    ds.PatientGantryRelationshipCodeSequence = Sequence([_code("102540008", "SCT", "headfirst")])
    ds.AcquisitionContextSequence = Sequence()
    ds.SliceThickness = ds_text(slice_mm)
    ds.SpacingBetweenSlices = ds_text(slice_mm)
    ds.ReconstructionDiameter = ds_text(pixel_mm * columns)
    ds.GantryDetectorTilt = "0"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [ds_text(pixel_mm), ds_text(pixel_mm)]
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = "0"
    ds.ActualFrameDuration = acq.bed_seconds * 1000
    ds.DoseCalibrationFactor = "1.0"
    ds.ScatterFractionFactor = "0.31"
    ds.DeadTimeFactor = "1.02"
    if philips_scale is not None:
        block = ds.private_block(0x7053, PHILIPS_PRIVATE_CREATOR, create=True)
        block.add_new(0x00, "DS", ds_text(philips_scale[0]))
        block.add_new(0x09, "DS", ds_text(philips_scale[1]))
    return ds


def _energy_window() -> Dataset:
    window = Dataset()
    window.EnergyWindowLowerLimit = "435"
    window.EnergyWindowUpperLimit = "585"
    return window


IMPLEMENTATION_VERSION_NAME = "PSMA_NODE_SYNTH"
PREAMBLE = b"\x00" * 128 + b"DICM"
PIXEL_DATA = BaseTag(0x7FE00010)
_ENCODER = threading.Lock()
"""Slices are written from several threads; pydicom's compression plugins (OpenJPEG, RLE) are not known to
be thread-safe (concurrent use crashed the interpreter), so one slice is compressed at a time."""


def _explicit(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element: 2-byte length (the file meta's VRs), or OB's long form."""
    if vr == b"OB":
        return struct.pack("<HH2sHI", group, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _uid_value(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def file_meta_bytes(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, prefix and File Meta Information group, as pydicom writes them for this file."""
    name = IMPLEMENTATION_VERSION_NAME.encode("ascii")
    elements = b"".join((
        _explicit(0x0002, 0x0001, b"OB", b"\x00\x01"),
        _explicit(0x0002, 0x0002, b"UI", _uid_value(sop_class_uid)),
        _explicit(0x0002, 0x0003, b"UI", _uid_value(sop_instance_uid)),
        _explicit(0x0002, 0x0010, b"UI", _uid_value(transfer_syntax)),
        _explicit(0x0002, 0x0012, b"UI", _uid_value(PYDICOM_IMPLEMENTATION_UID)),
        _explicit(0x0002, 0x0013, b"SH", name + b" " if len(name) % 2 else name),
    ))
    return PREAMBLE + _explicit(0x0002, 0x0000, b"UL", struct.pack("<I", len(elements))) + elements


class SeriesWriter:
    """Writes the slices of one series from its base dataset.

    Uncompressed, the base's elements are encoded once into bytes; each slice encodes only the elements
    it adds (UID, position, slope, ...), merges them by tag and writes its pixel bytes after them: the
    same bytes pydicom's `dcmwrite` would produce for the combined dataset, at a fraction of the cost.
    """

    def __init__(self, base: Dataset, transfer_syntax: str) -> None:
        self.base = base
        self.syntax = TRANSFER_SYNTAXES[transfer_syntax]
        self._implicit = self.syntax == ImplicitVRLittleEndian
        self._charset = base.get("SpecificCharacterSet")
        self._shared = [] if self.syntax.is_compressed else self._encode(base)

    def _encode(self, dataset: Dataset) -> list[tuple[int, bytes]]:
        """(tag, encoded element) for each top-level element, in tag order."""
        dataset = correct_ambiguous_vr(dataset, True)
        encoded = []
        for element in dataset:
            if element.tag.element == 0 and element.tag.group > 6:  # retired group lengths are not written
                continue
            buffer = DicomBytesIO()
            buffer.is_little_endian, buffer.is_implicit_VR = True, self._implicit
            write_data_element(buffer, element, self._charset)
            encoded.append((int(element.tag), buffer.getvalue()))
        return encoded

    def write(self, path: Path, own: Dataset, pixels: np.ndarray) -> None:
        """Write one slice: the base's elements, `own`'s (which must not repeat the base's), the pixels."""
        if self.syntax.is_compressed:
            self._write_compressed(path, own, pixels)
            return
        if PIXEL_DATA in own or any(tag in self.base for tag in own.keys()):
            raise ValueError("a slice's own elements must not repeat the base's or carry pixel data")
        data = np.ascontiguousarray(pixels)
        if data.dtype.itemsize != 2:
            raise ValueError(f"16-bit pixels expected, got {data.dtype}")
        if self._implicit:
            pixel_header = struct.pack("<HHI", 0x7FE0, 0x0010, data.nbytes)
        else:
            pixel_header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, data.nbytes)
        elements = sorted(self._shared + self._encode(own), key=lambda pair: pair[0])
        with open(path, "wb") as out:
            out.write(file_meta_bytes(self.base.SOPClassUID, own.SOPInstanceUID, self.syntax))
            out.writelines(encoded for _, encoded in elements)
            out.write(pixel_header)
            out.write(memoryview(data).cast("B"))

    def _write_compressed(self, path: Path, own: Dataset, pixels: np.ndarray) -> None:
        ds = Dataset()
        ds.update(self.base)
        ds.update(own)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        with _ENCODER:
            ds.compress(self.syntax, pixels, generate_instance_uid=False)
            ds.save_as(path, enforce_file_format=True)
