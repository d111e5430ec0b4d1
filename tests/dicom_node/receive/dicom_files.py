"""Small PET/CT DICOM files for receiving tests, written with pydicom (any transfer syntax)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    JPEG2000,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSNearLossless,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

UNCOMPRESSED = {ImplicitVRLittleEndian, ExplicitVRLittleEndian}


def image(modality: str, study_uid: str, series_uid: str, index: int, size: int = 32,
          patient_name: str = "Doe^John", seed: int = 0,
          frame_of_reference_uid: str | None = None) -> Dataset:
    """One axial slice (index along z); PET carries the radiopharmaceutical sequence."""
    ds = Dataset()
    ds.SOPClassUID = PositronEmissionTomographyImageStorage if modality == "PT" else CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_reference_uid or generate_uid()
    ds.Modality = modality
    ds.PatientName = patient_name
    ds.PatientID = "PID-1"
    ds.AccessionNumber = "ACC-1"
    ds.StudyDate = "20250101"
    ds.SeriesDate = "20250101"
    ds.SeriesTime = "101500"
    ds.StudyDescription = "PSMA PET/CT"
    ds.SeriesDescription = f"{modality} test"
    ds.SeriesNumber = 2 if modality == "PT" else 1
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [-100.0, -100.0, -50.0 + 3.0 * index]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [4.0, 4.0]
    ds.SliceThickness = 3.0
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if modality == "CT" else 0
    if modality == "PT":
        ds.Units = "BQML"
        ds.DecayCorrection = "START"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.CorrectedImage = ["ATTN", "DECY"]
        ds.ImageIndex = index + 1
        ds.NumberOfSlices = 10
        nuclide = Dataset()
        nuclide.CodeValue, nuclide.CodingSchemeDesignator = "C-111A1", "SRT"
        nuclide.CodeMeaning = "^18^Fluorine"
        info = Dataset()
        info.Radiopharmaceutical = "PSMA-1007"
        info.RadionuclideHalfLife = 6586.2
        info.RadionuclideTotalDose = 250e6
        info.RadiopharmaceuticalStartTime = "093000"
        info.RadionuclideCodeSequence = Sequence([nuclide])
        ds.RadiopharmaceuticalInformationSequence = Sequence([info])
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, 0.0
    else:
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    rng = np.random.default_rng(seed + index)
    pixels = rng.integers(0, 2000, size=(size, size), dtype=np.uint16 if modality == "PT" else np.int16)
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds._pixels = pixels  # kept for re-encoding into compressed syntaxes
    return ds


# pydicom's encoders need a target for the lossy syntaxes: a compression ratio, a deviation per pixel.
LOSSY_ENCODING = {JPEG2000: {"j2k_cr": [10]}, JPEGLSNearLossless: {"jls_error": 3}}


def encode(ds: Dataset, transfer_syntax: str) -> Dataset:
    """The dataset in another transfer syntax (compressed by pydicom's encoders; Lossy Image Compression is
    left as it was, so that a test decides what the instance says of itself)."""
    if transfer_syntax in UNCOMPRESSED or transfer_syntax == "1.2.840.10008.1.2.1.99":
        ds.file_meta.TransferSyntaxUID = transfer_syntax
        return ds
    ds.compress(transfer_syntax, ds._pixels, **LOSSY_ENCODING.get(transfer_syntax, {}))
    return ds


def write_series(directory: Path, modality: str = "PT", count: int = 5, study_uid: str | None = None,
                 transfer_syntax: str = ExplicitVRLittleEndian, size: int = 32,
                 patient_name: str = "Doe^John") -> list[Path]:
    """`count` slices of one series as files; returns their paths in slice order."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_of_reference_uid = generate_uid()
    paths = []
    for index in range(count):
        ds = encode(image(modality, study_uid, series_uid, index, size, patient_name,
                          frame_of_reference_uid=frame_of_reference_uid), transfer_syntax)
        path = directory / f"{modality}{index:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
