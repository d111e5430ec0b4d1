"""DICOM series become volumes in exactly the dcm2niix + nibabel layout, and broken stacks are refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from inference.volume import Series, VolumeError, load_volume
from tests.inference.localize.dicom_files import axial_affine, write_series
from tests.support.tools import require_tool


def _rotation(z_degrees: float, x_degrees: float) -> np.ndarray:
    a, b = np.radians(z_degrees), np.radians(x_degrees)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rx @ rz


def _dcm2niix(folder: Path, out: Path) -> nib.Nifti1Image:
    out.mkdir()
    subprocess.run(
        [require_tool("dcm2niix"), "-z", "n", "-b", "n", "-f", "vol", "-o", str(out), str(folder)],
        check=True,
        capture_output=True,
    )
    return nib.load(out / "vol.nii")


@pytest.mark.parametrize(
    ("modality", "rotation"),
    [("CT", (0.0, 0.0)), ("PT", (12.0, 7.0))],
    ids=["axial-ct", "oblique-pet-varying-slopes"],
)
def test_volume_matches_dcm2niix_array_and_affine(tmp_path: Path, modality: str, rotation: tuple) -> None:
    rng = np.random.default_rng(1)
    shape = (24, 20, 12)
    affine = axial_affine((0.8, 0.9, 2.5), (-10.0, 30.0, -200.0))
    affine[:3, :3] = _rotation(*rotation) @ affine[:3, :3]
    if modality == "CT":
        array = rng.integers(-1024, 2000, size=shape).astype(float)
        paths = write_series(tmp_path / "dcm", array, affine, "CT", intercept=-1024)
    else:
        slopes = rng.uniform(0.5, 3.0, size=shape[2])
        array = rng.integers(0, 30000, size=shape) * slopes[None, None, :]
        paths = write_series(tmp_path / "dcm", array, affine, "PT", slopes=slopes)

    volume = load_volume(paths)
    reference = _dcm2niix(tmp_path / "dcm", tmp_path / "nii")

    assert volume.array.shape == reference.shape
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.array, reference.get_fdata(), rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(volume.affine_ras, reference.affine, atol=1e-3)
    np.testing.assert_allclose(volume.affine_ras, np.diag([-1, -1, 1, 1]) @ volume.affine_lps)
    np.testing.assert_allclose(volume.array, array, rtol=1e-4, atol=1e-3)


def test_axis0_points_to_patient_left_and_axis1_to_anterior(tmp_path: Path) -> None:
    array = np.zeros((8, 6, 4))
    array[7, 0, 0] = 100.0  # last column, last DICOM row (flipped), first slice
    paths = write_series(tmp_path, array, axial_affine((1.0, 1.0, 2.0), (0.0, 0.0, 0.0)))
    series = Series.scan(paths)
    volume = series.read()

    assert volume.array[7, 0, 0] == 100.0
    assert pydicom.dcmread(series.paths[0]).pixel_array[5, 7] == 100  # DICOM row 5 of 6 = bottom (posterior)
    x_dir, y_dir, z_dir = (volume.affine_lps[:3, a] for a in range(3))
    assert x_dir[0] > 0 and y_dir[1] < 0 and z_dir[2] > 0  # towards L, towards A (−P), towards S


def test_slices_sorted_by_position_not_instance_number(tmp_path: Path) -> None:
    array = np.zeros((4, 4, 5))
    for k in range(5):
        array[..., k] = k * 10
    paths = write_series(tmp_path, array, axial_affine((1.0, 1.0, 3.0), (0.0, 0.0, -50.0)))
    shuffled = [paths[i] for i in (3, 0, 4, 1, 2)]

    series = Series.scan(shuffled)

    assert [float(h.ImagePositionPatient[2]) for h in series.headers] == [-50.0, -47.0, -44.0, -41.0, -38.0]
    np.testing.assert_array_equal(series.read().array[0, 0, :], [0, 10, 20, 30, 40])


def test_k_range_reads_only_those_slices(tmp_path: Path) -> None:
    array = np.arange(4 * 4 * 10, dtype=float).reshape(4, 4, 10)
    paths = write_series(tmp_path, array, axial_affine((1.0, 1.0, 2.0), (5.0, 6.0, 7.0)))
    series = Series.scan(paths)
    full = series.read()
    for k in (0, 1, 8, 9):  # files outside the range vanish: reading must not touch them
        series.paths[k].unlink()

    part = series.read(k_range=(2, 8))
    strided = series.read(k_range=(2, 8), step=3)

    np.testing.assert_array_equal(part.array, full.array[:, :, 2:8])
    np.testing.assert_allclose(part.index_to_lps([0, 0, 0]), full.index_to_lps([0, 0, 2]))
    np.testing.assert_array_equal(strided.array, full.array[:, :, 2:8:3])
    np.testing.assert_allclose(strided.index_to_lps([1, 2, 1]), full.index_to_lps([1, 2, 5]))
    assert series.shape == (4, 4, 10)


def test_int16_read_keeps_hounsfield_values(tmp_path: Path) -> None:
    array = np.array([-1024.0, 0.0, 40.0, 3000.0]).reshape(2, 2, 1).repeat(2, axis=2)
    paths = write_series(tmp_path, array, axial_affine((1.0, 1.0, 1.0), (0.0, 0.0, 0.0)), intercept=-1024)

    volume = Series.scan(paths).read(dtype=np.int16)

    assert volume.array.dtype == np.int16
    np.testing.assert_array_equal(volume.array, array)


def test_jpeg2000_ct_is_decoded(shared_data: Path) -> None:
    folder = shared_data / "real-ct-jpeg2000"
    first = pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True)
    assert first.file_meta.TransferSyntaxUID.is_compressed

    volume = load_volume(sorted(folder.iterdir()))

    assert volume.array.shape == (512, 512, 20)
    assert volume.array.min() == pytest.approx(-1024.0)
    assert 200 < volume.array.max() < 4000
    assert volume.modality == "CT"


def test_real_ge_pet_uneven_spacing_uses_mean_step_like_dcm2niix(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "real-pet-ge-sts001" / "PT"
    series = Series.scan(sorted(folder.iterdir()))
    reference = _dcm2niix(folder, tmp_path / "nii")

    assert series.shape == (128, 128, 267)
    assert series.slice_step == pytest.approx(3.27, abs=1e-4)
    assert any("uneven" in note and "3.19" in note and "3.29" in note for note in series.notes)
    np.testing.assert_allclose(series.read().affine_ras, reference.affine, atol=1e-3)
    np.testing.assert_allclose(series.read(k_range=(100, 110)).array, reference.get_fdata()[:, :, 100:110],
                               rtol=1e-6)


def _broken(tmp_path: Path, hook, shape=(4, 4, 6)) -> list[Path]:  # type: ignore[no-untyped-def]
    return write_series(tmp_path, np.zeros(shape), axial_affine((1.0, 1.0, 3.0), (0.0, 0.0, 0.0)), hook=hook)


def _move(k_from: int, dz: float):  # type: ignore[no-untyped-def]
    def hook(k: int, ds: pydicom.Dataset) -> None:
        if k >= k_from:
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y, z + dz]

    return hook


def _tilt(k: int, ds: pydicom.Dataset) -> None:
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y + k * 3.0 * np.tan(np.radians(15)), z]


def _rotate_one(k: int, ds: pydicom.Dataset) -> None:
    if k == 3:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]


def _resize_one(k: int, ds: pydicom.Dataset) -> None:
    if k == 2:
        ds.Rows, ds.Columns = 2, 8


def _other_series(k: int, ds: pydicom.Dataset) -> None:
    if k == 0:
        ds.SeriesInstanceUID = pydicom.uid.generate_uid()


def _no_position(k: int, ds: pydicom.Dataset) -> None:
    if k == 1:
        del ds.ImagePositionPatient


def _multiframe(k: int, ds: pydicom.Dataset) -> None:
    ds.NumberOfFrames = 3


def _eight_bits(k: int, ds: pydicom.Dataset) -> None:
    if k == 2:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = bytes(ds.Rows * ds.Columns)


def _colour(k: int, ds: pydicom.Dataset) -> None:
    if k == 4:
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        (_move(3, 6.0), "a 9.00 mm gap between slices 2 and 3 where the usual step is 3.00 mm"),
        (_move(3, -3.0), "duplicate slice position"),
        (_tilt, "sheared by 15.0° against the slice normal (gantry tilt)"),
        (_rotate_one, "mixed orientations"),
        (_resize_one, "different sizes"),
        (_other_series, "2 different series"),
        (_no_position, "ImagePositionPatient is missing"),
        (_multiframe, "multi-frame image with 3 frames"),
        (_eight_bits, "CT slice slice0002.dcm has Bits Allocated 8 while the series has 16"),
        (_colour, "CT slice slice0004.dcm has 3 samples per pixel (colour)"),
    ],
    ids=[
        "gap", "duplicate", "tilt", "orientation", "size", "two-series", "no-position", "multiframe",
        "bits-allocated", "colour",
    ],
)
def test_irregular_stacks_are_refused_with_specific_reason(tmp_path: Path, hook, message: str) -> None:  # type: ignore[no-untyped-def]
    paths = _broken(tmp_path, hook)
    with pytest.raises(VolumeError) as error:
        Series.scan(paths)
    assert message in str(error.value)


def test_slightly_uneven_spacing_is_noted_not_refused(tmp_path: Path) -> None:
    series = Series.scan(_broken(tmp_path, _move(3, 0.2)))
    assert series.slice_step == pytest.approx(15.2 / 5)
    assert "uneven" in series.notes[0]


def test_non_dicom_file_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    with pytest.raises(VolumeError, match="junk.dcm: not a readable DICOM file"):
        Series.scan([junk])


def test_undecodable_pixels_are_refused_when_read(tmp_path: Path) -> None:
    paths = _broken(tmp_path, None)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 20])
    series = Series.scan(paths)
    with pytest.raises(VolumeError, match="slice0002.dcm: pixel data"):
        series.read()


def test_a_slice_without_pixel_data_is_refused_naming_it(tmp_path: Path) -> None:
    paths = _broken(tmp_path, None)
    dataset = pydicom.dcmread(paths[3])
    del dataset.PixelData
    dataset.save_as(paths[3])
    series = Series.scan(paths)
    with pytest.raises(VolumeError) as error:
        series.read()
    assert str(error.value) == "CT slice slice0003.dcm has no pixel data"
