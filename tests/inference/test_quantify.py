"""Weight-free quantification finds the lesion, not the bladder, in the prostate or the prostate bed."""

# The study fixtures are imported from tests.inference.studies and received as test parameters.
# ruff: noqa: F401, F811

from __future__ import annotations

import numpy as np

from inference.preprocess import crop, cube_box
from inference.quantify import QuantifyOptions, ct_on_grid, find_bladder, quantify
from inference.suv import suv_factor, to_suv
from inference.volume import Series, Volume
from tests.inference.studies import Study, bed_study, negative_study, recurrence_study

PET_BLUR_TOLERANCE = 0.2
"""SUVmax on the PET grid may fall below the ground truth (partial volume): 20 % is plenty at 4-9 mm."""


def _crops(study: Study, center: tuple[float, float, float]) -> tuple[Volume, Volume]:
    pet, ct = Series.scan(study.pet_paths), Series.scan(study.ct_paths)
    ct_box, pet_box = cube_box(ct.affine_lps, ct.shape, center), cube_box(pet.affine_lps, pet.shape, center)
    ct_crop = crop(ct.read(ct_box.k_range), ct_box, ct_box.k_range[0])
    pet_crop = crop(pet.read(pet_box.k_range), pet_box, pet_box.k_range[0])
    return Volume(to_suv(pet_crop.array, suv_factor(pet.headers)), pet_crop.affine_lps), ct_crop


def _pet_voxel_mm(pet: Volume) -> float:
    return float(max(pet.spacing))


def test_suvmax_is_the_lesion_in_the_prostate(recurrence_study: Study) -> None:
    truth = recurrence_study.truth
    pet, ct = _crops(recurrence_study, recurrence_study.prostate_or_bed)
    found = quantify(pet, ct, recurrence_study.prostate_or_bed, "prostate")
    assert abs(found.suv_max - truth["lesion_suv_max"]) <= PET_BLUR_TOLERANCE * truth["lesion_suv_max"]
    assert np.linalg.norm(np.array(found.suv_max_lps) - truth["lesion_center_lps"]) <= 1.5 * _pet_voxel_mm(
        pet
    )
    assert 0 < found.suv_mean <= found.suv_max
    lesion_ml = 4 / 3 * np.pi * truth["lesion_radius_mm"] ** 3 / 1000
    assert 0 < found.focal_volume_ml < 10 * lesion_ml + 5


def test_in_the_prostate_bed_the_region_sits_below_the_bladder(bed_study: Study) -> None:
    truth = bed_study.truth
    bladder_center = tuple(truth["bladder_centroid_lps"])
    pet, ct = _crops(bed_study, bladder_center)
    found = quantify(pet, ct, bladder_center, "bladder")
    assert "prostate bed" in found.suv_peak_region_note
    assert abs(found.suv_max - truth["lesion_suv_max"]) <= PET_BLUR_TOLERANCE * truth["lesion_suv_max"]
    assert np.linalg.norm(np.array(found.suv_max_lps) - truth["lesion_center_lps"]) <= 1.5 * _pet_voxel_mm(
        pet
    )


def test_the_bladder_is_found_and_excluded(negative_study: Study) -> None:
    truth = negative_study.truth
    center = negative_study.prostate_or_bed
    pet, ct = _crops(negative_study, center)
    bladder = find_bladder(pet, ct_on_grid(ct, pet), np.array(center), QuantifyOptions())
    assert bladder.any()
    bladder_centroid = pet.index_to_lps(np.argwhere(bladder).mean(axis=0))
    assert np.linalg.norm(bladder_centroid - truth["bladder_centroid_lps"]) < 15.0
    found = quantify(pet, ct, center, "prostate")
    hottest = pet.lps_to_index(np.array(found.suv_max_lps)).round().astype(int)
    assert not bladder[tuple(hottest)]
    # No lesion: the hottest voxel is ordinary prostate uptake, far below a lesion's.
    assert found.suv_max < 4.0
