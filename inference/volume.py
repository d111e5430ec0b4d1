"""DICOM series to 3-D volumes with their patient geometry.

The layout reproduces what dcm2niix v1.0.20220720 + nibabel give for axial DICOM, because the published
weights were trained on exactly that: any other layout shows the network a mirrored patient.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from scipy import ndimage

ORIENTATION_TOLERANCE = 1e-3
"""Largest difference between direction cosines still treated as the same orientation."""
TILT_TOLERANCE_MM = 0.05
"""In-plane drift (mm per mm along the normal) of slice origins beyond which the stack is tilted."""
UNEVEN_NOTE_FRACTION = 0.001
"""Relative deviation of one slice step from the mean worth a note (dcm2niix would warn)."""
GAP_REFUSE_FRACTION = 0.25
"""Relative deviation of one slice step from the median beyond which the series is refused (missing slices)."""
DUPLICATE_FRACTION = 0.01
"""Two slices closer than this fraction of the median step sit at the same position."""


class VolumeError(ValueError):
    """A series that cannot become one regular 3-D volume; the message says exactly why."""


@dataclass
class Volume:
    """A 3-D image on its own grid.

    `array` is laid out as dcm2niix + nibabel give it for axial DICOM, the layout the published model was
    trained on: axis 0 = DICOM column index (towards patient left), axis 1 = DICOM row index *flipped*
    (towards anterior), axis 2 = slices sorted along the slice normal, ascending (towards superior).
    `affine_lps` maps (i, j, k, 1) voxel indices of `array` to patient LPS millimetres.
    """

    array: np.ndarray
    affine_lps: np.ndarray
    series_uid: str = ""
    modality: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def affine_ras(self) -> np.ndarray:
        """The same mapping to RAS millimetres (what nibabel/dcm2niix write)."""
        flip = np.diag([-1.0, -1.0, 1.0, 1.0])
        return flip @ self.affine_lps

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(np.linalg.norm(self.affine_lps[:3, a])) for a in range(3))  # type: ignore[return-value]

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=float)
        return (self.affine_lps[:3, :3] @ ijk.T).T + self.affine_lps[:3, 3]

    def lps_to_index(self, lps: np.ndarray) -> np.ndarray:
        inverse = np.linalg.inv(self.affine_lps)
        lps = np.asarray(lps, dtype=float)
        return (inverse[:3, :3] @ lps.T).T + inverse[:3, 3]

    def sample(self, points_lps: np.ndarray, outside: float) -> np.ndarray:
        """Trilinear values (float32) at LPS points, `outside` beyond the volume (e.g. air, -1000 HU, for a
        CT)."""
        index = self.lps_to_index(np.asarray(points_lps, dtype=float).reshape(-1, 3))
        return ndimage.map_coordinates(np.asarray(self.array, dtype=np.float32), index.T, order=1,
                                       mode="constant", cval=outside)


def _label(header: pydicom.Dataset) -> str:
    """Name the series in messages by its modality ("CT has a 9 mm gap ...")."""
    return str(getattr(header, "Modality", "") or "series")


def _floats(header: pydicom.Dataset, keyword: str, count: int, path: Path) -> np.ndarray:
    value = getattr(header, keyword, None)
    if value is None:
        raise VolumeError(f"{path.name}: {keyword} is missing; cannot place the slice in space")
    try:
        numbers = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise VolumeError(f"{path.name}: {keyword} is not numeric ({value!r})") from exc
    if numbers.shape != (count,) or not np.all(np.isfinite(numbers)):
        raise VolumeError(f"{path.name}: {keyword} must hold {count} finite numbers, got {value!r}")
    return numbers


def _check_pixel_layout(label: str, files: list[Path], headers: list[pydicom.Dataset]) -> None:
    """Every slice greyscale with the series' Bits Allocated; said per slice, before any pixel is decoded."""
    bits = [int(getattr(h, "BitsAllocated", 0) or 0) for h in headers]
    usual = Counter(bits).most_common(1)[0][0]
    for path, header, value in zip(files, headers, bits):
        if value != usual:
            raise VolumeError(
                f"{label} slice {path.name} has Bits Allocated {value} while the series has {usual}"
            )
        samples = int(getattr(header, "SamplesPerPixel", 1) or 1)
        if samples != 1:
            raise VolumeError(
                f"{label} slice {path.name} has {samples} samples per pixel (colour); "
                "only greyscale images can be analysed"
            )


@dataclass
class Series:
    """One DICOM series scanned from its headers: geometry known, pixels read on demand.

    Scanning reads no pixel data, so a 900-slice CT costs a few MB; `read` then decodes only the slices
    asked for, one at a time, into the returned array.
    """

    paths: list[Path]
    headers: list[pydicom.Dataset]
    shape: tuple[int, int, int]
    affine_lps: np.ndarray
    notes: list[str] = field(default_factory=list)

    @property
    def series_uid(self) -> str:
        return str(getattr(self.headers[0], "SeriesInstanceUID", ""))

    @property
    def modality(self) -> str:
        return str(getattr(self.headers[0], "Modality", ""))

    @property
    def slice_step(self) -> float:
        return float(np.linalg.norm(self.affine_lps[:3, 2]))

    @classmethod
    def scan(cls, paths: Iterable[Path | str]) -> Series:
        """Read headers only, check they form one regular stack, and sort them along the slice normal."""
        files = [Path(p) for p in paths]
        if not files:
            raise VolumeError("no DICOM files given")
        headers: list[pydicom.Dataset] = []
        for path in files:
            try:
                headers.append(pydicom.dcmread(path, stop_before_pixels=True))
            except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
                raise VolumeError(f"{path.name}: not a readable DICOM file ({exc})") from exc
        return cls._from_headers(files, headers)

    @classmethod
    def _from_headers(cls, files: list[Path], headers: list[pydicom.Dataset]) -> Series:
        label = _label(headers[0])
        series_uids = {str(getattr(h, "SeriesInstanceUID", "")) for h in headers}
        if len(series_uids) > 1:
            raise VolumeError(f"files belong to {len(series_uids)} different series; give one series at a time")
        for path, header in zip(files, headers):
            frames = int(getattr(header, "NumberOfFrames", 1) or 1)
            if frames > 1:
                raise VolumeError(
                    f"{path.name}: multi-frame image with {frames} frames (enhanced/multi-frame objects are not "
                    "supported; send the series as single-frame images)"
                )
        sizes = {(int(getattr(h, "Rows", 0)), int(getattr(h, "Columns", 0))) for h in headers}
        if len(sizes) > 1:
            raise VolumeError(f"{label} slices have different sizes {sorted(sizes)}; cannot stack them")
        rows, columns = sizes.pop()
        if rows < 1 or columns < 1:
            raise VolumeError(f"{label} slices have no Rows/Columns")
        _check_pixel_layout(label, files, headers)

        orientations = [_floats(h, "ImageOrientationPatient", 6, p) for p, h in zip(files, headers)]
        orientation = orientations[0]
        for path, other in zip(files, orientations):
            if np.max(np.abs(other - orientation)) > ORIENTATION_TOLERANCE:
                raise VolumeError(
                    f"{label} slices have mixed orientations ({path.name}: {np.round(other, 4).tolist()} vs "
                    f"{np.round(orientation, 4).tolist()}); cannot stack them"
                )
        row_dir, col_dir = orientation[:3], orientation[3:]
        if abs(np.linalg.norm(row_dir) - 1) > 0.01 or abs(np.linalg.norm(col_dir) - 1) > 0.01 or abs(
            row_dir @ col_dir
        ) > 0.01:
            raise VolumeError(f"{label} ImageOrientationPatient is not two orthonormal directions: {orientation}")
        row_dir = row_dir / np.linalg.norm(row_dir)
        col_dir = col_dir / np.linalg.norm(col_dir)
        normal = np.cross(row_dir, col_dir)

        spacings = {tuple(_floats(h, "PixelSpacing", 2, p)) for p, h in zip(files, headers)}
        if len(spacings) > 1:
            raise VolumeError(f"{label} slices have different pixel spacings {sorted(spacings)}")
        row_spacing, column_spacing = spacings.pop()
        if row_spacing <= 0 or column_spacing <= 0:
            raise VolumeError(f"{label} PixelSpacing must be positive, got {row_spacing}, {column_spacing}")

        positions = np.array([_floats(h, "ImagePositionPatient", 3, p) for p, h in zip(files, headers)])
        distance = positions @ normal
        order = np.argsort(distance, kind="stable")
        files = [files[i] for i in order]
        headers = [headers[i] for i in order]
        positions = positions[order]
        distance = distance[order]
        notes: list[str] = []

        if len(headers) == 1:
            thickness = float(getattr(headers[0], "SliceThickness", 0) or 0) or 1.0
            step = thickness
        else:
            steps = np.diff(distance)
            median = float(np.median(steps))
            if median <= 0:
                raise VolumeError(f"{label} has {len(headers)} slices but they all sit at the same position")
            duplicates = np.nonzero(steps < DUPLICATE_FRACTION * median)[0]
            if duplicates.size:
                k = int(duplicates[0])
                raise VolumeError(
                    f"{label} has {duplicates.size} duplicate slice position(s), e.g. slices {k} and {k + 1} both "
                    f"at {distance[k]:.2f} mm along the normal (several time frames or a re-sent series mixed?)"
                )
            deviation = np.abs(steps - median) / median
            worst = int(np.argmax(deviation))
            if deviation[worst] > GAP_REFUSE_FRACTION:
                raise VolumeError(
                    f"{label} has a {steps[worst]:.2f} mm gap between slices {worst} and {worst + 1} where the "
                    f"usual step is {median:.2f} mm (missing slices?)"
                )
            in_plane = positions - positions[0] - np.outer(distance - distance[0], normal)
            drift = float(np.max(np.linalg.norm(in_plane, axis=1)))
            extent = float(distance[-1] - distance[0])
            if drift > TILT_TOLERANCE_MM * extent + 0.01:
                angle = float(np.degrees(np.arctan2(drift, extent)))
                raise VolumeError(
                    f"{label} slices are sheared by {angle:.1f}° against the slice normal (gantry tilt); "
                    "tilted acquisitions are not supported: reconstruct without tilt"
                )
            step = extent / (len(headers) - 1)
            spread = np.abs(steps - step) / step
            if float(np.max(spread)) > UNEVEN_NOTE_FRACTION:
                values = sorted({round(float(s), 2) for s in steps})
                notes.append(
                    f"{label} slice spacing is uneven ({'/'.join(f'{v:.2f}' for v in values)} mm); "
                    f"using the mean step {step:.4f} mm as dcm2niix does"
                )

        affine = np.eye(4)
        affine[:3, 0] = column_spacing * row_dir
        affine[:3, 1] = -row_spacing * col_dir
        affine[:3, 2] = step * normal
        affine[:3, 3] = positions[0] + (rows - 1) * row_spacing * col_dir
        return cls(
            paths=files,
            headers=headers,
            shape=(columns, rows, len(headers)),
            affine_lps=affine,
            notes=notes,
        )

    def read(
        self, k_range: tuple[int, int] | None = None, dtype: type | np.dtype = np.float32, step: int = 1
    ) -> Volume:
        """Decode slices k_range[0] <= k < k_range[1] (every `step`-th) with their own rescale.

        Integer dtypes are allowed (int16 halves the memory of a CT) and are refused if a value does not fit.
        """
        k0, k1 = (0, self.shape[2]) if k_range is None else (int(k_range[0]), int(k_range[1]))
        if not 0 <= k0 < k1 <= self.shape[2]:
            raise VolumeError(f"slice range {k0}..{k1} outside 0..{self.shape[2]}")
        if step < 1:
            raise VolumeError(f"slice step must be >= 1, got {step}")
        indices = range(k0, k1, step)
        target = np.dtype(dtype)
        columns, rows, _ = self.shape
        out = np.empty((columns, rows, len(indices)), dtype=target)
        for out_k, k in enumerate(indices):
            out[:, :, out_k] = self._slice(k, target)
        affine = self.affine_lps.copy()
        affine[:3, 3] = self.affine_lps[:3, 3] + k0 * self.affine_lps[:3, 2]
        affine[:3, 2] = self.affine_lps[:3, 2] * step
        return Volume(out, affine, series_uid=self.series_uid, modality=self.modality, notes=list(self.notes))

    def _slice(self, k: int, target: np.dtype) -> np.ndarray:
        path = self.paths[k]
        label = f"{self.modality or 'series'} slice {path.name}"
        try:
            dataset = pydicom.dcmread(path)
        except Exception as exc:  # a file changed since it was scanned
            raise VolumeError(f"{label} is no longer readable ({type(exc).__name__}: {exc})") from exc
        if "PixelData" not in dataset or not dataset.get("PixelData"):
            raise VolumeError(f"{label} has no pixel data")
        try:
            pixels = dataset.pixel_array
        except Exception as exc:  # pydicom raises many types for undecodable pixel data
            raise VolumeError(f"{label}: pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc
        columns, rows, _ = self.shape
        if pixels.shape != (rows, columns):
            raise VolumeError(
                f"{label}: pixel data holds an array of shape {pixels.shape} where {rows} x {columns} "
                f"greyscale pixels were expected (Bits Allocated {getattr(dataset, 'BitsAllocated', '?')}, "
                f"Samples per Pixel {getattr(dataset, 'SamplesPerPixel', '?')}, "
                f"Number of Frames {getattr(dataset, 'NumberOfFrames', 1)})"
            )
        slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
        intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
        if target.kind == "f":
            values = pixels.astype(target) * target.type(slope) + target.type(intercept)
        else:
            if slope != round(slope) or intercept != round(intercept):
                raise VolumeError(f"{label}: rescale {slope}/{intercept} is not integral; read as float")
            values = pixels.astype(np.int64) * int(slope) + int(intercept)
            info = np.iinfo(target)
            if values.min() < info.min or values.max() > info.max:
                raise VolumeError(f"{label}: values {values.min()}..{values.max()} do not fit {target}")
        return values.T[:, ::-1]


def load_volume(paths: Iterable[Path | str]) -> Volume:
    """Whole series as one float32 volume."""
    return Series.scan(paths).read()

