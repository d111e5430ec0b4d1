"""Write small single-frame DICOM series from an array in the Volume layout, for volume and localiser tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage, generate_uid

SliceHook = Callable[[int, pydicom.Dataset], None]


def write_series(
    out_dir: Path,
    array: np.ndarray,
    affine_lps: np.ndarray,
    modality: str = "CT",
    slopes: np.ndarray | None = None,
    intercept: float = 0.0,
    hook: SliceHook | None = None,
) -> list[Path]:
    """One file per axis-2 slice; pixel (row r, column c) = array[c, rows-1-r, k] (dcm2niix layout inverted).

    `slopes` gives a per-slice RescaleSlope (PET style); `hook(k, dataset)` edits a slice before it is
    written (to make broken series). Instance numbers run backwards so sorting must use positions.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    columns, rows, slices = array.shape
    row_dir = affine_lps[:3, 0] / np.linalg.norm(affine_lps[:3, 0])
    col_dir = -affine_lps[:3, 1] / np.linalg.norm(affine_lps[:3, 1])
    pixel_spacing = [float(np.linalg.norm(affine_lps[:3, 1])), float(np.linalg.norm(affine_lps[:3, 0]))]
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    sop_class = CTImageStorage if modality == "CT" else PositronEmissionTomographyImageStorage
    paths = []
    for k in range(slices):
        slope = 1.0 if slopes is None else float(slopes[k])
        stored = np.rint((array[:, ::-1, k].T - intercept) / slope)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = out_dir / f"slice{k:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = modality
        ds.PatientID = "SYNTH"
        ds.PatientName = "Synthetic^Patient"
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = "20240101"
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = "120000"
        ds.SeriesNumber = 1
        ds.InstanceNumber = slices - k
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
        position = affine_lps[:3, :3] @ np.array([0.0, rows - 1.0, k]) + affine_lps[:3, 3]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.PixelSpacing = [f"{v:.6f}" for v in pixel_spacing]
        ds.SliceThickness = f"{np.linalg.norm(affine_lps[:3, 2]):.4f}"
        ds.Rows, ds.Columns = rows, columns
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{slope:.6g}"
        ds.RescaleIntercept = f"{intercept:g}"
        ds.PixelData = stored.astype(np.int16).tobytes()
        if hook is not None:
            hook(k, ds)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def axial_affine(spacing: tuple[float, float, float], origin_lps: tuple[float, float, float]) -> np.ndarray:
    """The dcm2niix-layout LPS affine of a plain axial stack whose voxel (0, 0, 0) sits at origin_lps."""
    affine = np.diag([spacing[0], -spacing[1], spacing[2], 1.0])
    affine[:3, 3] = origin_lps
    return affine
