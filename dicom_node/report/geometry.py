"""Where analysis-grid positions and masks land on the analysed series' own DICOM images.

The SR's 2-D SCOORDs and the SEG's frames must name exact source instances and pixel positions, while the
analysis works on a crop Volume (axis 0 = DICOM column, axis 1 = DICOM row flipped, axis 2 = slices along
the normal; see `inference.volume.Volume`). Everything here goes through each instance's own header
(ImagePositionPatient, ImageOrientationPatient, PixelSpacing), never through the slice order, so uneven
slice spacing and the row flip cannot shift a mark by a pixel or a slice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom


class GeometryError(ValueError):
    """Instance headers that do not define an image plane; the message names the instance and the tag."""


@dataclass(frozen=True)
class ImagePlane:
    """One single-frame image's plane in patient LPS millimetres, from its header."""

    header: pydicom.Dataset
    position: np.ndarray
    """ImagePositionPatient: centre of the top-left pixel."""
    row_direction: np.ndarray
    """Direction of increasing column index (first ImageOrientationPatient triplet)."""
    column_direction: np.ndarray
    """Direction of increasing row index (second triplet)."""
    row_spacing: float
    """PixelSpacing[0]: distance between the centres of adjacent rows."""
    column_spacing: float
    """PixelSpacing[1]: distance between the centres of adjacent columns."""
    rows: int
    columns: int

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.row_direction, self.column_direction)

    @property
    def sop_instance_uid(self) -> str:
        return str(self.header.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        return str(self.header.SOPClassUID)

    def pixel_to_lps(self, column: np.ndarray, row: np.ndarray) -> np.ndarray:
        """0-based (column, row) pixel-centre indices to LPS millimetres, shape (..., 3)."""
        column = np.asarray(column, dtype=float)[..., None]
        row = np.asarray(row, dtype=float)[..., None]
        return (
            self.position
            + column * self.column_spacing * self.row_direction
            + row * self.row_spacing * self.column_direction
        )

    @classmethod
    def of(cls, header: pydicom.Dataset) -> ImagePlane:
        name = str(getattr(header, "SOPInstanceUID", "") or "instance without SOPInstanceUID")
        values: dict[str, np.ndarray] = {}
        for keyword, count in (("ImagePositionPatient", 3), ("ImageOrientationPatient", 6), ("PixelSpacing", 2)):
            raw = getattr(header, keyword, None)
            try:
                numbers = np.array([float(v) for v in raw], dtype=float) if raw is not None else None
            except (TypeError, ValueError):
                numbers = None
            if numbers is None or numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
                raise GeometryError(f"{name}: {keyword} must hold {count} finite numbers, got {raw!r}")
            values[keyword] = numbers
        rows, columns = int(getattr(header, "Rows", 0) or 0), int(getattr(header, "Columns", 0) or 0)
        if rows < 1 or columns < 1:
            raise GeometryError(f"{name}: Rows/Columns missing")
        orientation = values["ImageOrientationPatient"]
        row_direction = orientation[:3] / np.linalg.norm(orientation[:3])
        column_direction = orientation[3:] / np.linalg.norm(orientation[3:])
        row_spacing, column_spacing = (float(v) for v in values["PixelSpacing"])
        if row_spacing <= 0 or column_spacing <= 0:
            raise GeometryError(f"{name}: PixelSpacing must be positive, got {values['PixelSpacing'].tolist()}")
        return cls(
            header=header,
            position=values["ImagePositionPatient"],
            row_direction=row_direction,
            column_direction=column_direction,
            row_spacing=row_spacing,
            column_spacing=column_spacing,
            rows=rows,
            columns=columns,
        )


@dataclass(frozen=True)
class ImagePoint:
    """An LPS point as seen on one instance: the values a 2-D SCOORD needs."""

    header: pydicom.Dataset
    column: float
    """SCOORD x: the top-left pixel's centre is at 0.5."""
    row: float
    """SCOORD y: the top-left pixel's centre is at 0.5."""
    distance_mm: float
    """Signed distance of the point from the image plane along its normal."""

    @property
    def sop_instance_uid(self) -> str:
        return str(self.header.SOPInstanceUID)

    @property
    def sop_class_uid(self) -> str:
        return str(self.header.SOPClassUID)

    @property
    def inside(self) -> bool:
        """Whether the point falls within the image's pixel area (0..Columns, 0..Rows in SCOORD terms)."""
        return 0.0 <= self.column <= float(self.header.Columns) and 0.0 <= self.row <= float(self.header.Rows)


def planes(headers: Sequence[pydicom.Dataset | ImagePlane]) -> list[ImagePlane]:
    """Image planes of the given headers (planes already made are passed through)."""
    if not headers:
        raise GeometryError("no instance headers given")
    return [h if isinstance(h, ImagePlane) else ImagePlane.of(h) for h in headers]


def nearest_instance(
    headers: Sequence[pydicom.Dataset | ImagePlane], point_lps: Sequence[float]
) -> ImagePoint:
    """The instance whose plane is nearest to `point_lps` along its normal, and the point's pixel position.

    Pixel coordinates follow the SCOORD convention (PS3.3 C.18.6.1.2): column/row of the top-left pixel's
    centre are (0.5, 0.5), so the point is projected onto the plane and 0.5 is added to its 0-based indices.
    Pass planes (`planes(headers)`) when searching the same series repeatedly: parsing headers is the cost.
    """
    point = np.asarray(point_lps, dtype=float)
    if point.shape != (3,) or not np.all(np.isfinite(point)):
        raise GeometryError(f"point must be three finite LPS millimetres, got {point_lps!r}")
    candidates = planes(headers)
    distances = [float((point - plane.position) @ plane.normal) for plane in candidates]
    best = int(np.argmin(np.abs(distances)))
    plane = candidates[best]
    offset = point - plane.position
    return ImagePoint(
        header=plane.header,
        column=float(offset @ plane.row_direction) / plane.column_spacing + 0.5,
        row=float(offset @ plane.column_direction) / plane.row_spacing + 0.5,
        distance_mm=distances[best],
    )


def mask_to_frames(
    mask: np.ndarray, affine_lps: np.ndarray, headers: Sequence[pydicom.Dataset | ImagePlane]
) -> dict[str, np.ndarray]:
    """A crop-grid boolean mask as full-size (Rows × Columns) frames of the instances it touches.

    Each instance pixel centre is mapped into the mask's grid and takes the value of the nearest voxel
    (exactly the voxel itself when the crop was cut from this series). Keys are SOPInstanceUIDs, in the
    order of `headers`; instances the mask does not touch are left out. Only pixels whose centres can round
    into the mask's bounding box are mapped, so a small focus on a large series costs little.
    """
    volume = np.asarray(mask, dtype=bool)
    if volume.ndim != 3:
        raise GeometryError(f"mask must be 3-D, got shape {volume.shape}")
    frames: dict[str, np.ndarray] = {}
    if not volume.any():
        return frames
    affine = np.asarray(affine_lps, dtype=float)
    inverse = np.linalg.inv(affine)
    shape = np.array(volume.shape)
    occupied = np.argwhere(volume)
    low, high = occupied.min(axis=0) - 0.5, occupied.max(axis=0) + 0.5
    corners_index = np.array([[a, b, c] for a in (low[0], high[0]) for b in (low[1], high[1])
                              for c in (low[2], high[2])])
    corners = corners_index @ affine[:3, :3].T + affine[:3, 3]
    for plane in planes(headers):
        offset = corners - plane.position
        distance = offset @ plane.normal
        if distance.min() > 1e-6 or distance.max() < -1e-6:
            continue  # the plane misses the (half-voxel padded) box around the mask
        columns = offset @ plane.row_direction / plane.column_spacing
        rows = offset @ plane.column_direction / plane.row_spacing
        c0, c1 = max(0, math.floor(columns.min())), min(plane.columns - 1, math.ceil(columns.max()))
        r0, r1 = max(0, math.floor(rows.min())), min(plane.rows - 1, math.ceil(rows.max()))
        if c0 > c1 or r0 > r1:
            continue
        row_index, column_index = np.mgrid[r0 : r1 + 1, c0 : c1 + 1]
        centres = plane.pixel_to_lps(column_index, row_index)
        voxel = np.rint(centres @ inverse[:3, :3].T + inverse[:3, 3]).astype(np.int64)
        within = np.all((voxel >= 0) & (voxel < shape), axis=-1)
        if not within.any():
            continue
        patch = np.zeros(within.shape, dtype=bool)
        hits = voxel[within]
        patch[within] = volume[hits[:, 0], hits[:, 1], hits[:, 2]]
        if patch.any():
            frame = np.zeros((plane.rows, plane.columns), dtype=bool)
            frame[r0 : r1 + 1, c0 : c1 + 1] = patch
            frames[plane.sop_instance_uid] = frame
    return frames
