"""CT Image and PET Image objects of a synthetic study, in three vendor flavours and four transfer syntaxes.

Each series has one base dataset holding what every slice shares; a slice is a fresh dataset that shares
those elements (read-only) and adds its own, so writing hundreds of slices costs little more than the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
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
    radio.Radiopharmaceutical = header.tracer
    radio.RadiopharmaceuticalStartTime = _time(acq.injection)
    radio.RadiopharmaceuticalStartDateTime = acq.injection.strftime("%Y%m%d%H%M%S")
    radio.RadionuclideTotalDose = ds_text(acq.dose_bq)
    radio.RadionuclideHalfLife = ds_text(nuclide.half_life_s)
    radio.RadionuclidePositronFraction = "0.9673" if nuclide.name == "F-18" else "0.8891"
    radio.RadionuclideCodeSequence = Sequence([_code(nuclide.code_value, nuclide.code_scheme,
                                                     nuclide.code_meaning)])
    if "FDG" in header.tracer.upper():
        fdg = _code("35321007", "SCT", "Fluorodeoxyglucose F^18^")
        radio.RadiopharmaceuticalCodeSequence = Sequence([fdg])
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


def new_slice(base: Dataset) -> Dataset:
    """A dataset sharing the base's elements; only elements added afterwards belong to this slice."""
    ds = Dataset()
    ds.update(base)
    return ds


def save(ds: Dataset, path: Path, pixels: np.ndarray, transfer_syntax: str) -> None:
    """Attach the pixels in the study's transfer syntax and write a Part 10 file."""
    syntax = TRANSFER_SYNTAXES[transfer_syntax]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PSMA_NODE_SYNTH"
    ds.file_meta = meta
    if syntax.is_compressed:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(syntax, pixels, generate_instance_uid=False)
    else:
        meta.TransferSyntaxUID = syntax
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)
