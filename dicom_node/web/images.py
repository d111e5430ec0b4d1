"""Secondary Capture result images for the dashboard: found under the results directory, served as PNG.

The SC objects are the same files that were (or will be) sent to PACS, so what an admin sees on the study
page is exactly what radiologists got. Files are looked up through the database (outbox paths), falling back
to a scan of the results directory by Series Instance UID when the outbox holds no path (no destination
configured) or the file moved; whatever the source, only files inside the results directory are read.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from sqlalchemy.orm import Session

from db.models import Result
from db.queries import secondary_captures

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScImage:
    sop_instance_uid: str
    path: Path
    frames: int


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _frames(path: Path) -> int:
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["NumberOfFrames"])
    return int(getattr(ds, "NumberOfFrames", 1) or 1)


def _scan(results_dir: Path, study_uid: str, series_uid: str) -> list[ScImage]:
    """SC files of one series under the results directory (the study's sub-folder first if there is one)."""
    roots = [results_dir / study_uid] if (results_dir / study_uid).is_dir() else [results_dir]
    found: list[ScImage] = []
    for root in roots:
        for path in sorted(root.rglob("*.dcm")):
            try:
                ds = pydicom.dcmread(
                    path,
                    stop_before_pixels=True,
                    specific_tags=["SeriesInstanceUID", "SOPInstanceUID", "NumberOfFrames"],
                )
            except (InvalidDicomError, OSError):
                continue
            if getattr(ds, "SeriesInstanceUID", None) == series_uid:
                found.append(
                    ScImage(str(ds.SOPInstanceUID), path, int(getattr(ds, "NumberOfFrames", 1) or 1))
                )
    return found


def result_images(session: Session, result: Result, study_uid: str, results_dir: Path) -> list[ScImage]:
    """The Secondary Capture images of one result that exist on disk."""
    images: list[ScImage] = []
    for item in secondary_captures(session, result.id):
        path = Path(item.path)
        if path.is_file() and _inside(path, results_dir):
            try:
                images.append(ScImage(item.sop_instance_uid, path, _frames(path)))
            except (InvalidDicomError, OSError) as exc:
                log.warning("unreadable secondary capture", extra={"path": str(path), "error": str(exc)})
    if not images and result.sc_series_uid and results_dir.is_dir():
        images = _scan(results_dir, study_uid, result.sc_series_uid)
    return images


def _to_uint8(pixels: np.ndarray, ds: pydicom.Dataset) -> np.ndarray:
    """8-bit display values: colour as stored (pydicom returns YBR as RGB); greyscale through its window."""
    if pixels.ndim == 3 or (
        pixels.dtype == np.uint8 and ds.get("PhotometricInterpretation") == "MONOCHROME2"
    ):
        return pixels.astype(np.uint8)
    data = pixels.astype(np.float64)
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    data = data * slope + intercept
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        c = float(center[0] if isinstance(center, pydicom.multival.MultiValue) else center)
        w = float(width[0] if isinstance(width, pydicom.multival.MultiValue) else width)
        low, high = c - w / 2, c + w / 2
    else:
        low, high = float(data.min()), float(data.max())
    scaled = np.clip((data - low) / max(high - low, 1e-9), 0, 1) * 255
    if ds.get("PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 255 - scaled
    return scaled.astype(np.uint8)


def render_png(path: Path, frame: int = 0) -> bytes:
    """One frame of a DICOM image as PNG bytes."""
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[min(max(frame, 0), frames - 1)]
    image = Image.fromarray(_to_uint8(pixels, ds))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
