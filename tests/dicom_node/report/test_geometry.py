"""Crop-grid positions and masks land on the exact source instance and pixel, through the real volume reader.

Each synthetic series has non-square pixels, different row and column counts, shuffled file order and
marker pixels at known (instance, row, column); the tests read it with `inference.volume.Series`, cut the
analysis cube as the analysis does, and check the marks come back to the very pixels they were read from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicom_node.report.geometry import GeometryError, mask_to_frames, nearest_instance
from inference.preprocess import IndexBox, crop
from inference.volume import Series, Volume

ROWS, COLUMNS, SLICES = 40, 32, 24
ROW_SPACING, COLUMN_SPACING = 3.0, 2.5
MARKER = 1000
MARKS = [(5, 11, 7), (5, 12, 7), (6, 11, 8), (12, 30, 20), (17, 3, 25)]
"""(slice index along the normal, row, column) of marked pixels."""


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    angle = np.radians(degrees)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


ORIENTATIONS = {
    "axial": (np.eye(3), [3.27] * (SLICES - 1)),
    "axial-uneven": (np.eye(3), [3.27, 3.272] * ((SLICES - 1) // 2) + [3.27]),
    "oblique": (_rotation(np.array([1.0, 2.0, 0.5]), 25.0), [2.0] * (SLICES - 1)),
}


def _write_series(directory: Path, rotation: np.ndarray, steps: list[float]) -> list[Path]:
    """Files of one PET series, written in shuffled order, with MARKER at the pixels of MARKS."""
    row_direction, column_direction = rotation @ np.array([1.0, 0, 0]), rotation @ np.array([0, 1.0, 0])
    normal = np.cross(row_direction, column_direction)
    origin = np.array([-40.0, -60.0, -900.0])
    offsets = np.concatenate([[0.0], np.cumsum(steps)])
    series_uid, frame_uid = generate_uid(), generate_uid()
    paths = []
    for k in np.random.default_rng(3).permutation(SLICES):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.128"
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID, ds.Modality = series_uid, frame_uid, "PT"
        ds.InstanceNumber = int(k) + 1
        ds.ImagePositionPatient = [float(v) for v in origin + offsets[k] * normal]
        ds.ImageOrientationPatient = [float(v) for v in (*row_direction, *column_direction)]
        ds.PixelSpacing = [ROW_SPACING, COLUMN_SPACING]
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        pixels = np.full((ROWS, COLUMNS), 10, dtype=np.uint16)
        for mark_k, row, column in MARKS:
            if mark_k == k:
                pixels[row, column] = MARKER
        ds.PixelData = pixels.tobytes()
        path = directory / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(params=sorted(ORIENTATIONS))
def series(request: pytest.FixtureRequest, tmp_path: Path) -> Series:
    rotation, steps = ORIENTATIONS[request.param]
    return Series.scan(_write_series(tmp_path, rotation, steps))


def _source(series: Series) -> dict[str, np.ndarray]:
    return {str(h.SOPInstanceUID): pydicom.dcmread(p).pixel_array for p, h in zip(series.paths, series.headers)}


def _analysis_crop(series: Series) -> Volume:
    """A sub-block cut as the analysis cuts its cube (offset on every axis), holding every mark."""
    box = IndexBox(lower=(2, 2, 3), upper=(30, 39, 20))
    return crop(series.read(box.k_range), box, k_offset=box.k_range[0])


def test_mask_from_crop_lands_on_the_marked_source_pixels(series: Series) -> None:
    cube = _analysis_crop(series)
    mask = cube.array == MARKER
    assert mask.sum() == len(MARKS)

    frames = mask_to_frames(mask, cube.affine_lps, list(reversed(series.headers)))

    source = _source(series)
    expected = {uid: pixels == MARKER for uid, pixels in source.items() if (pixels == MARKER).any()}
    assert set(frames) == set(expected)
    for uid, frame in frames.items():
        assert frame.shape == (ROWS, COLUMNS)
        assert np.array_equal(frame, expected[uid]), uid


def test_crop_voxel_maps_to_its_pixel_centre_on_its_instance(series: Series) -> None:
    cube = _analysis_crop(series)
    source = _source(series)
    for voxel in np.argwhere(cube.array == MARKER):
        point = nearest_instance(series.headers, cube.index_to_lps(voxel))

        column, row = point.column - 0.5, point.row - 0.5
        assert column == pytest.approx(round(column), abs=1e-6) and row == pytest.approx(round(row), abs=1e-6)
        assert source[point.sop_instance_uid][round(row), round(column)] == MARKER
        assert abs(point.distance_mm) < 0.05
        assert point.inside


def test_point_between_slices_goes_to_the_nearer_instance_with_fractional_pixel_position(tmp_path: Path) -> None:
    paths = _write_series(tmp_path, np.eye(3), [3.0] * (SLICES - 1))
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    by_position = sorted(headers, key=lambda h: float(h.ImagePositionPatient[2]))
    target = by_position[9]
    ipp = np.array([float(v) for v in target.ImagePositionPatient])
    point = ipp + np.array([7.25 * COLUMN_SPACING, 11.5 * ROW_SPACING, 1.2])  # 1.2 mm above slice 9 of 3 mm

    found = nearest_instance(headers, point)

    assert found.sop_instance_uid == target.SOPInstanceUID
    assert found.sop_class_uid == "1.2.840.10008.5.1.4.1.1.128"
    assert found.column == pytest.approx(7.75) and found.row == pytest.approx(12.0)
    assert found.distance_mm == pytest.approx(1.2)


def test_point_outside_the_image_area_is_flagged(tmp_path: Path) -> None:
    headers = [pydicom.dcmread(p, stop_before_pixels=True)
               for p in _write_series(tmp_path, np.eye(3), [3.0] * (SLICES - 1))]
    ipp = np.array([float(v) for v in headers[0].ImagePositionPatient])

    assert not nearest_instance(headers, ipp + np.array([-5.0, 0.0, 0.0])).inside


def test_empty_mask_gives_no_frames(series: Series) -> None:
    cube = _analysis_crop(series)
    assert mask_to_frames(np.zeros(cube.array.shape, bool), cube.affine_lps, series.headers) == {}


def test_header_without_pixel_spacing_is_refused_by_name(tmp_path: Path) -> None:
    headers = [pydicom.dcmread(p, stop_before_pixels=True)
               for p in _write_series(tmp_path, np.eye(3), [3.0] * (SLICES - 1))]
    del headers[4].PixelSpacing

    with pytest.raises(GeometryError, match=f"{headers[4].SOPInstanceUID}: PixelSpacing"):
        nearest_instance(headers, [0.0, 0.0, -880.0])


def test_whole_crop_mask_covers_exactly_the_crop_footprint_on_each_instance(series: Series) -> None:
    cube = _analysis_crop(series)
    full = np.ones(cube.array.shape, dtype=bool)
    marks = cube.array == MARKER  # the marked pixels, found again as part of the footprint

    frames = mask_to_frames(full, cube.affine_lps, series.headers)

    assert len(frames) == cube.array.shape[2]
    assert sum(int(frame.sum()) for frame in frames.values()) == full.size
    source = _source(series)
    assert sum(int((source[uid][frame] == MARKER).sum()) for uid, frame in frames.items()) == int(marks.sum())
