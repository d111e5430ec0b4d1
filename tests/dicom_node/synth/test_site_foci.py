"""The generator's vignette options: foci at named sites, a hot bladder, a hot spleen, the tracer as a code
only, and the ground truth a segmenter needs for the blood pool (T5-T10); defaults stay as they were."""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest

from dicom_node.synth import SynthOptions, generate_study
from dicom_node.synth.phantom import SPINE_LEVELS_MM
from inference.volume import load_volume
from tests.support.dicom import StudyMaker
from tests.support.tools import require_tool


def test_site_foci_lie_in_their_tissue_and_do_not_count_as_the_recurrence(small_study: StudyMaker) -> None:
    folder, truth = small_study(seed=12, recurrence=False, extent_mm=300.0,
                                site_foci=("pubic_bone", "rectal_wall", "seminal_vesicle"))
    assert [f["kind"] for f in truth.foci] == ["pubic_bone", "rectal_wall", "seminal_vesicle"]
    assert truth.recurrence is False and truth.lesion_center_lps is None
    ct = load_volume(sorted((folder / "CT").glob("*.dcm")))
    hu = {f["kind"]: float(ct.array[tuple(np.rint(ct.lps_to_index(np.array([f["center_lps"]]))[0]).astype(int))])
          for f in truth.foci}
    assert hu["pubic_bone"] > 150.0  # marrow or cortex: the focus is in the bone
    assert 0.0 < hu["rectal_wall"] < 80.0 and 0.0 < hu["seminal_vesicle"] < 80.0
    prostate = np.array(truth.prostate_centroid_lps)
    for focus in truth.foci:  # inside the analysed 40 mm sphere around the prostate
        assert np.linalg.norm(np.array(focus["center_lps"]) - prostate) < 38.0, focus["kind"]


def test_overrides_of_bladder_and_spleen_uptake_reach_the_pet(small_study: StudyMaker) -> None:
    folder, truth = small_study(seed=4, bladder_suv=30.0, spleen_suv=25.0, extent_mm=600.0)
    assert truth.organs["spleen"]["suv"] == pytest.approx(25.0)
    assert truth.organs["urinary_bladder"]["suv"] == pytest.approx(30.0)
    _, plain = small_study(seed=4, extent_mm=600.0)
    assert plain.organs["spleen"]["suv"] != pytest.approx(25.0)
    assert plain.prostate_centroid_lps == truth.prostate_centroid_lps  # the same patient otherwise


def test_tracer_written_only_as_its_cid_4021_code_passes_dciodvfy(small_study: StudyMaker) -> None:
    folder, _ = small_study(tracer_as_code=True)
    path = sorted((folder / "PT").glob("*.dcm"))[3]
    item = pydicom.dcmread(path).RadiopharmaceuticalInformationSequence[0]
    assert "Radiopharmaceutical" not in item
    code = item.RadiopharmaceuticalCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("126758", "DCM", "PSMA-1007 F^18^")
    result = subprocess.run([require_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60)
    assert [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")] == []


def test_thoracic_vertebrae_and_the_descending_aorta_are_in_the_ground_truth(small_study: StudyMaker) -> None:
    _, truth = small_study(extent_mm=900.0)
    for name, (low, high) in SPINE_LEVELS_MM.items():
        solid = truth.organs[name]["solids"][0]
        assert solid["end_lps"][2] - solid["center_lps"][2] == pytest.approx(high - low)
    assert truth.organs["vertebrae_T5"]["in_field_of_view"]
    assert max(s["end_lps"][2] for s in truth.organs["aorta"]["solids"]) > truth.organs["vertebrae_T5"]["solids"][0][
        "end_lps"][2]
    assert {"colon", "sacrum", "hip_left", "hip_right"} <= set(truth.organs)


@pytest.mark.parametrize(("bad", "message"), [({"site_foci": ("liver",)}, "site_foci"),
                                               ({"tracer": "Choline", "tracer_as_code": True}, "no code"),
                                               ({"near_bladder_gap_mm": -1.0}, "near_bladder_gap_mm"),
                                               ({"spleen_suv": 0.0}, "spleen_suv")])
def test_bad_vignette_options_are_refused_by_name(tmp_path, bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_study(tmp_path, SynthOptions(**bad))  # type: ignore[arg-type]
