"""The generator's reference organs, extra foci and near-bladder focus, in the images and the ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dicom_node.cli.main import cli

from dicom_node.synth import SynthOptions, generate_study
from dicom_node.synth.phantom import (
    BLOOD_POOL_SUV,
    LIVER_SUV,
    NEAR_BLADDER_GAP_MM,
    PAROTID_SUV,
    SPLEEN_SUV,
)
from inference.volume import load_volume
from tests.support.dicom import StudyMaker

RANGES = {"aorta": BLOOD_POOL_SUV, "spleen": SPLEEN_SUV, "liver": LIVER_SUV,
          "parotid_gland_left": PAROTID_SUV, "parotid_gland_right": PAROTID_SUV}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reference_organ_uptake_lies_in_the_published_ranges(small_study: StudyMaker, seed: int) -> None:
    _, truth = small_study(seed=seed)
    for organ, (low, high) in RANGES.items():
        assert low <= truth.organs[organ]["suv"] <= high, organ
    assert truth.organs["parotid_gland_left"]["suv"] == truth.organs["parotid_gland_right"]["suv"]


def test_default_extent_misses_the_parotid_glands_and_a_longer_one_reaches_them(
    small_study: StudyMaker,
) -> None:
    _, default = small_study(extent_mm=600.0)
    _, long = small_study(extent_mm=900.0)
    assert default.organs["parotid_gland_left"]["in_field_of_view"] is False
    assert default.organs["spleen"]["in_field_of_view"] and default.organs["aorta"]["in_field_of_view"]
    assert long.organs["parotid_gland_left"]["in_field_of_view"] is True


def test_spleen_uptake_is_what_the_pet_shows(small_study: StudyMaker) -> None:
    folder, truth = small_study(extent_mm=600.0, pet_matrix=128)
    pet = load_volume(sorted((folder / "PT").glob("*.dcm")))
    solid = truth.organs["spleen"]["solids"][0]
    centre = pet.lps_to_index(np.array(solid["center_lps"])).round().astype(int)
    core = pet.array[tuple(slice(c - 2, c + 3) for c in centre)] * truth.suv_factor
    assert float(core.mean()) == pytest.approx(truth.organs["spleen"]["suv"], rel=0.08)


def test_extra_and_near_bladder_foci_are_in_the_truth_and_the_pet(small_study: StudyMaker) -> None:
    _, truth = small_study(seed=3, pet_matrix=128, extra_foci=2, near_bladder_focus=True)
    kinds = [f["kind"] for f in truth.foci]
    assert kinds == ["prostate", "prostate", "prostate", "near_bladder"]
    peaks = [f["suv_max"] for f in truth.foci]
    assert len(set(peaks)) == len(peaks) and min(peaks) > 4.0
    for a in truth.foci:
        for b in truth.foci:
            if a is not b:
                apart = np.linalg.norm(np.array(a["center_lps"]) - b["center_lps"])
                assert apart - a["radius_mm"] - b["radius_mm"] >= 10.0
    near = truth.foci[-1]
    bladder = truth.organs["urinary_bladder"]["solids"][0]
    offset = (np.array(near["center_lps"]) - bladder["center_lps"]) / np.array(bladder["radii_mm"])
    assert 1.0 < float(np.linalg.norm(offset)) < 2.0
    assert near["radius_mm"] + NEAR_BLADDER_GAP_MM <= np.linalg.norm(
        np.array(near["center_lps"]) - bladder["center_lps"])
    assert truth.lesion_center_lps == truth.foci[0]["center_lps"]


def test_extra_foci_leave_the_rest_of_the_patient_unchanged(small_study: StudyMaker) -> None:
    _, plain = small_study(seed=4)
    _, more = small_study(seed=4, extra_foci=1)
    assert plain.lesion_center_lps == more.lesion_center_lps
    # the per-slice rescale of the PET may differ where the extra focus lies
    assert plain.lesion_suv_max == pytest.approx(more.lesion_suv_max, rel=1e-3)
    assert plain.organs == more.organs and plain.prostate_centroid_lps == more.prostate_centroid_lps
    assert len(more.foci) == len(plain.foci) + 1


def test_too_many_extra_foci_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra_foci"):
        generate_study(tmp_path, SynthOptions(extra_foci=9))


def test_cli_options_add_foci_and_reach_the_parotid_glands(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "s"), "--ct-matrix", "64", "--pet-matrix", "48",
                                      "--extent-mm", "900", "--seed", "3", "--extra-foci", "2",
                                      "--near-bladder-focus"])
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "s" / "ground_truth.json").read_text())
    assert [f["kind"] for f in truth["foci"]].count("near_bladder") == 1 and len(truth["foci"]) == 4
    assert truth["organs"]["parotid_gland_right"]["in_field_of_view"] is True
    bad = CliRunner().invoke(cli, ["synth", str(tmp_path / "t"), "--extra-foci", "7"])
    assert bad.exit_code == 2 and "extra_foci" in bad.output
