"""The weight-free localiser lands in the prostate or bladder on synthetic and real CT, and refuses non-pelvic CT."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from dicom_node.synth import GroundTruth, SynthOptions, generate_study
from inference.localize import LocalisationError
from inference.localize.anatomical import AnatomicalLocalizer, locate_volume, read_coarse, to_grid
from inference.volume import Series, Volume


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, tuple[Path, GroundTruth]]:
    """One small synthetic study with a prostate and one after prostatectomy."""
    out = {}
    for prostatectomy in (False, True):
        folder = tmp_path_factory.mktemp(f"synth-px{int(prostatectomy)}")
        truth = generate_study(
            folder, SynthOptions(seed=11, prostatectomy=prostatectomy, ct_matrix=128, pet_matrix=64, extent_mm=300)
        )
        out[prostatectomy] = (folder, truth)
    return out


def _series(folder: Path) -> Series:
    return Series.scan(sorted(folder.iterdir()))


def _real_ct(shared_data: Path) -> Volume:
    image = nib.load(shared_data / "real-ct-pelvis" / "example_ct.nii.gz")
    return Volume(np.asarray(image.dataobj, dtype=np.float32), np.diag([-1.0, -1.0, 1.0, 1.0]) @ image.affine)


@pytest.mark.parametrize("with_pet", [True, False], ids=["ct+pet", "ct-only"])
def test_finds_prostate_within_10mm_on_synthetic_study(studies: dict, with_pet: bool) -> None:
    folder, truth = studies[False]
    pet = _series(folder / "PT") if with_pet else None

    result = AnatomicalLocalizer().locate(_series(folder / "CT"), pet)

    assert result.organ == "prostate"
    assert np.linalg.norm(np.subtract(result.center_lps, truth.prostate_centroid_lps)) < 10
    assert 0.5 <= result.confidence <= 1
    assert result.method == "anatomical"
    assert ("PET uptake" in result.detail) == with_pet


def test_uses_bladder_centre_after_prostatectomy(studies: dict) -> None:
    folder, truth = studies[True]

    result = AnatomicalLocalizer().locate(_series(folder / "CT"), _series(folder / "PT"))

    assert result.organ == "bladder"
    assert np.linalg.norm(np.subtract(result.center_lps, truth.bladder_centroid_lps)) < 10
    assert "no prostate" in result.detail


def test_lands_inside_bladder_on_real_pelvic_ct(shared_data: Path) -> None:
    """Plausibility region read off this CT: the bladder is the fluid-density (-10..35 HU) blob of ~0.5 l
    above the pubic symphysis (z 105 mm) and between the femoral heads (z 145 mm), near x = 0."""
    ct = _real_ct(shared_data)

    result = locate_volume(ct)

    index = ct.lps_to_index(np.array(result.center_lps))
    ijk = np.indices(ct.array.shape).reshape(3, -1).T
    near = np.linalg.norm((ijk - index) * 3.0, axis=1) <= 10
    values = ct.array.reshape(-1)[near]
    assert result.organ in ("bladder", "prostate")
    assert np.mean((values > -10) & (values < 35)) > 0.9
    x, _, z = result.center_lps
    assert abs(x) < 30 and 110 < z < 200


def test_refuses_ct_above_the_pelvis(shared_data: Path) -> None:
    ct = _real_ct(shared_data)
    upper = Volume(ct.array[:, :, 40:].copy(), ct.affine_lps.copy())
    upper.affine_lps[:3, 3] = ct.index_to_lps([0, 0, 40])

    with pytest.raises(LocalisationError, match="CT does not cover the pelvis: no pair of femoral heads found in z"):
        locate_volume(upper)


def test_refuses_synthetic_ct_without_pelvis(studies: dict) -> None:
    folder, truth = studies[False]
    series = _series(folder / "CT")
    upper = [p for p, h in zip(series.paths, series.headers) if float(h.ImagePositionPatient[2]) > 115]

    with pytest.raises(LocalisationError, match="does not cover the pelvis"):
        AnatomicalLocalizer().locate(Series.scan(upper))


def test_refuses_real_thigh_ct(shared_data: Path) -> None:
    series = Series.scan(sorted((shared_data / "real-pet-ge-sts001" / "CT").iterdir()))
    with pytest.raises(LocalisationError, match="does not cover the pelvis"):
        AnatomicalLocalizer().locate(series)


def test_refuses_ct_without_body() -> None:
    empty = Volume(np.full((40, 40, 30), -1000.0, dtype=np.float32), np.diag([4.0, -4.0, 4.0, 1.0]))
    with pytest.raises(LocalisationError, match="no body"):
        locate_volume(empty)


def test_coarse_read_matches_block_average_of_full_read(studies: dict) -> None:
    folder, _ = studies[False]
    series = _series(folder / "CT")
    full = series.read()

    coarse = read_coarse(series, 8.0)

    f = [max(1, round(8.0 / s)) for s in full.spacing]
    n = [s // k for s, k in zip(full.array.shape[:2], f[:2])]
    expected = full.array[: n[0] * f[0], : n[1] * f[1], :: f[2]].reshape(n[0], f[0], n[1], f[1], -1).mean(axis=(1, 3))
    np.testing.assert_allclose(coarse.array, expected, rtol=1e-5, atol=1e-2)
    np.testing.assert_allclose(coarse.index_to_lps([0, 0, 1]), full.index_to_lps([(f[0] - 1) / 2, (f[1] - 1) / 2, f[2]]))


def test_grid_reorients_any_axis_order_to_lps(shared_data: Path) -> None:
    ct = _real_ct(shared_data)  # nibabel RAS file: axis 0 runs towards patient right
    grid = to_grid(ct, 3.0)
    assert np.all(np.diag(grid.affine)[:3] > 0)
    np.testing.assert_allclose(grid.hu[0, 50, 20], ct.array[-1, -51, 20])
