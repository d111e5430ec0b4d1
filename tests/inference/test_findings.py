"""Findings per focus in PROMISE V2 terms, on synthetic studies with several foci and reference organs.

Reference-organ masks come from the stand-in TotalSegmentator (tests/support/fake_totalsegmentator.py), so
the node's real path runs: CT to NIfTI, subprocess, mask reading, mapping onto the PET grid, SUVmeans.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dicom_node.infer import summarise
from dicom_node.jobs import ClaimedJob
from inference.analysis import AnalysisOptions, analyse
from inference.findings import PEAK_SPHERE_RADIUS_MM, focus_words, suggest_local_category, suv_peak
from inference.focus_site import SiteCall
from inference.localize import LocalizerOptions
from inference.result import AnalysisResult, Focus
from tests.inference.studies import Study, make_study
from tests.support.fake_totalsegmentator import FakeTotalSegmentator, install_fake_totalsegmentator

FINE = {"ct_matrix": 128, "pet_matrix": 128, "pet_fov_mm": 400.0}
"""PET voxels of about 3 mm, so a 1 cm³ SUVpeak sphere holds a few dozen voxels."""
TRUTH_TO_REFERENCE = {"blood pool": "aorta", "spleen": "spleen", "liver": "liver",
                      "parotid glands": "parotid_gland_left"}


def _options(tmp: Path, localizer: LocalizerOptions | None = None) -> AnalysisOptions:
    return AnalysisOptions(models_dir=tmp / "no-models", device="cpu",
                           localizer=localizer or LocalizerOptions())


def _totalseg(fake: FakeTotalSegmentator) -> LocalizerOptions:
    return LocalizerOptions(kind="totalsegmentator", totalsegmentator_command=str(fake.executable),
                            totalsegmentator_home=fake.home)


@pytest.fixture(scope="module")
def whole_body(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """Prostate in situ, 900 mm (pelvis to parotids): the recurrence, two extra foci, a near-bladder one."""
    return make_study(tmp_path_factory.mktemp("whole-body"), seed=3, extent_mm=900.0, extra_foci=2,
                      near_bladder_focus=True, **FINE)


@pytest.fixture(scope="module")
def whole_body_result(
    whole_body: Study, tmp_path_factory: pytest.TempPathFactory
) -> tuple[AnalysisResult, FakeTotalSegmentator]:
    folder = tmp_path_factory.mktemp("fake-totalseg")
    fake = install_fake_totalsegmentator(folder, whole_body.root / "ground_truth.json")
    result = analyse(whole_body.pet_paths, whole_body.ct_paths, _options(folder, _totalseg(fake)))
    return result, fake


@pytest.fixture(scope="module")
def bed_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[AnalysisResult, Study]:
    """After prostatectomy, 600 mm (the default extent: the parotid glands are not scanned)."""
    study = make_study(tmp_path_factory.mktemp("bed-600"), seed=5, prostatectomy=True, extent_mm=600.0,
                       extra_foci=1, **FINE)
    folder = tmp_path_factory.mktemp("fake-totalseg-bed")
    fake = install_fake_totalsegmentator(folder, study.root / "ground_truth.json")
    return analyse(study.pet_paths, study.ct_paths, _options(folder, _totalseg(fake))), study


def _match(found: list[Focus], truth_focus: dict[str, Any]) -> Focus:
    """The found focus whose SUVmax lies closest to a ground-truth focus centre."""
    centre = np.array(truth_focus["center_lps"])
    return min(found, key=lambda f: float(np.linalg.norm(np.array(f.suv_max_lps) - centre)))


def _expected_score(suv_max: float, refs: dict[str, float]) -> tuple[int, float]:
    """PROMISE V2 score from ground-truth reference uptakes, and the relative margin to the closest cut."""
    thresholds = [refs["blood pool"], refs["spleen"], refs["parotid glands"]]
    score = sum(suv_max >= t for t in thresholds)
    margin = min(abs(suv_max - t) / t for t in thresholds)
    return score, margin


def test_every_focus_is_found_with_its_suvmax_position_and_order(
    whole_body: Study, whole_body_result: tuple[AnalysisResult, FakeTotalSegmentator]
) -> None:
    result, _ = whole_body_result
    assert result.findings is not None
    foci = result.findings.foci
    truth = whole_body.truth["foci"]
    assert len(truth) == 4 and len(foci) == len(truth)
    assert [f.number for f in foci] == [1, 2, 3, 4]
    assert [f.suv_max for f in foci] == sorted((f.suv_max for f in foci), reverse=True)
    matched = {id(_match(foci, t)) for t in truth}
    assert len(matched) == len(truth)
    for t in truth:
        focus = _match(foci, t)
        assert focus.suv_max == pytest.approx(t["suv_max"], rel=0.05)
        assert np.linalg.norm(np.array(focus.suv_max_lps) - t["center_lps"]) <= t["radius_mm"] + 4.0
        assert np.linalg.norm(np.array(focus.centroid_lps) - t["center_lps"]) <= 4.0
        assert 0 < focus.suv_mean < focus.suv_max and focus.volume_ml > 0
        assert result.images is not None
        assert focus.mask is not None and focus.mask.shape == result.images.pet_suv_crop.array.shape
    biggest = _match(foci, max(truth, key=lambda t: t["volume_ml"]))
    assert biggest.volume_ml == pytest.approx(max(t["volume_ml"] for t in truth), rel=0.5)
    masks = np.stack([f.mask for f in foci])  # type: ignore[misc]
    assert masks.sum(axis=0).max() == 1, "a voxel belongs to one focus at most"
    assert not (masks.any(axis=0) & result.findings.bladder_mask).any()  # type: ignore[operator]
    assert result.quantification is not None and result.quantification.suv_max == foci[0].suv_max


def test_suvpeak_lies_between_the_focus_mean_and_its_max(
    whole_body_result: tuple[AnalysisResult, FakeTotalSegmentator],
) -> None:
    result, _ = whole_body_result
    assert result.findings is not None
    for focus in result.findings.foci:
        assert focus.suv_peak is not None
        assert 0 < focus.suv_peak <= focus.suv_max
    large = max(result.findings.foci, key=lambda f: f.volume_ml)
    assert large.volume_ml > 2.0 and large.suv_peak >= 0.8 * large.suv_max  # type: ignore[operator]


def test_suvpeak_is_the_best_1cc_sphere_and_none_on_coarse_voxels() -> None:
    suv = np.ones((30, 30, 30), dtype=np.float32)
    suv[10:20, 10:20, 10:20] = 5.0
    suv[15, 15, 15] = 50.0
    focus = suv >= 5.0
    sphere_voxels = (np.indices((15, 15, 15)) - 7).reshape(3, -1)
    count = int(np.sum(np.linalg.norm(sphere_voxels * 2.0, axis=0) <= PEAK_SPHERE_RADIUS_MM))
    peak = suv_peak(suv, focus, (2.0, 2.0, 2.0))
    assert peak.value == pytest.approx((5.0 * (count - 1) + 50.0) / count)
    assert peak.volume_ml == pytest.approx(count * 0.008, abs=0.005) and "IBSI global intensity peak" in peak.note
    coarse = suv_peak(suv, focus, (9.4, 9.4, 4.0))
    assert coarse.value is None and coarse.note.startswith("none: PET voxels too coarse")


@pytest.mark.parametrize(("spacing", "voxels", "ml"), [((4.0, 4.0, 4.0), 19, 1.22), ((5.47, 5.47, 3.27), 7, 0.68)])
def test_suvpeak_records_the_true_volume_of_its_centre_in_sphere(
        spacing: tuple[float, float, float], voxels: int, ml: float) -> None:
    suv = np.full((21, 21, 21), 6.0, dtype=np.float32)
    focus = np.zeros(suv.shape, dtype=bool)
    focus[10, 10, 10] = True
    peak = suv_peak(suv, focus, spacing)
    assert peak.value == pytest.approx(6.0) and peak.volume_ml == pytest.approx(ml, abs=0.01)
    assert f"{voxels} voxels = {ml:.2f} ml" in peak.note


def test_suvpeak_next_to_a_hotter_bladder_leaves_the_bladder_out_and_stays_below_suvmax() -> None:
    """The issue's case: a 3x4x4-voxel focus of SUV 8.0 touching a SUV-30 bladder block, 4 mm voxels."""
    suv = np.full((30, 30, 30), 1.0, dtype=np.float32)
    bladder = np.zeros(suv.shape, dtype=bool)
    bladder[5:25, 5:25, 16:26] = True  # the bladder mask (urine plus its margin)
    suv[bladder] = 30.0
    focus = np.zeros(suv.shape, dtype=bool)
    focus[12:16, 12:16, 13:16] = True  # three slices thick, touching the bladder's lower face
    suv[focus] = 8.0
    spacing = (4.0, 4.0, 4.0)
    unexcluded = suv_peak(suv, focus, spacing)  # averaging urine in, the best sphere would read 13.8
    assert unexcluded.value is None and "(13.79 > 8.00)" in unexcluded.note
    peak = suv_peak(suv, focus, spacing, excluded=bladder)
    assert peak.value is not None and peak.value <= 8.0
    assert peak.volume_ml is not None and peak.volume_ml <= 1.22
    swamped = np.zeros(suv.shape, dtype=bool)
    swamped[12:16, 12:16, 15] = True  # one slice against the bladder: every sphere is > 25 % urine
    none = suv_peak(suv, swamped, spacing, excluded=bladder)
    assert none.value is None and "more than 25 % of the 1 cm³ sphere" in none.note


def test_suvpeak_is_none_when_a_hotter_neighbour_would_raise_it_above_suvmax() -> None:
    suv = np.full((30, 30, 30), 1.0, dtype=np.float32)
    suv[14, 14, 14] = 6.0
    suv[13:16, 15:17, 13:16] = 40.0  # hotter tissue right beside the focus's only voxel, not excluded
    focus = np.zeros(suv.shape, dtype=bool)
    focus[14, 14, 14] = True
    peak = suv_peak(suv, focus, (4.0, 4.0, 4.0))
    assert peak.value is None and "holds uptake above the focus's SUVbw max" in peak.note


def test_near_bladder_focus_is_adjacent_and_the_others_separate(
    whole_body: Study, whole_body_result: tuple[AnalysisResult, FakeTotalSegmentator]
) -> None:
    result, _ = whole_body_result
    assert result.findings is not None
    near = next(t for t in whole_body.truth["foci"] if t["kind"] == "near_bladder")
    focus = _match(result.findings.foci, near)
    assert focus.bladder_relation == "adjacent"
    assert focus.bladder_distance_mm is not None and 4.0 < focus.bladder_distance_mm <= 10.0
    far = [f for f in result.findings.foci if (f.bladder_distance_mm or 0.0) > 10]
    assert far and all(f.bladder_relation == "separate" for f in far)


def test_mipsma_scores_follow_the_reference_organs_of_the_stand_in_masks(
    whole_body: Study, whole_body_result: tuple[AnalysisResult, FakeTotalSegmentator]
) -> None:
    result, fake = whole_body_result
    findings = result.findings
    assert findings is not None and findings.mipsma_assessable
    organs = whole_body.truth["organs"]
    truth_refs = {name: organs[key]["suv"] for name, key in TRUTH_TO_REFERENCE.items()}
    measured = {r.name: r for r in findings.references}
    for name, value in truth_refs.items():
        assert measured[name].suv_mean == pytest.approx(value, rel=0.1), name
        assert "TotalSegmentator" in measured[name].method and "PET voxels" in measured[name].method
    assert "spleen instead of liver" in findings.mipsma_note
    blood = measured["blood pool"]
    assert "descending thoracic aorta from the top of T5 to the bottom of T10" in blood.method
    assert blood.volume_ml is not None and blood.volume_ml > 5.0 and "VOI" in blood.method
    parotid = measured["parotid glands"]
    assert [p.name for p in parotid.parts] == ["left parotid gland", "right parotid gland"]
    for side in parotid.parts:
        assert side.suv_mean == pytest.approx(truth_refs["parotid glands"], rel=0.1) and side.volume_ml
    checked = 0
    for focus in findings.foci:
        expected, margin = _expected_score(focus.suv_max, truth_refs)
        if margin >= 0.1:
            assert focus.mipsma == expected, focus.mipsma_note
            checked += 1
    assert checked >= 2
    calls = [c["argv"] for c in fake.recorded()]
    assert calls[0][4:11] == ["--roi_subset", "prostate", "urinary_bladder", "colon", "spleen", "liver", "aorta"]
    assert calls[0][11:] == ["vertebrae_T5", "vertebrae_T6", "vertebrae_T7", "vertebrae_T8", "vertebrae_T9",
                             "vertebrae_T10", "sacrum", "hip_left", "hip_right"]
    assert calls[1][-2:] == ["-ta", "head_glands_cavities"] and "--roi_subset" not in calls[1]


def test_parotid_glands_outside_the_scan_make_scores_above_the_spleen_not_assessable(
    bed_result: tuple[AnalysisResult, Study],
) -> None:
    result, study = bed_result
    findings = result.findings
    assert findings is not None and not findings.mipsma_assessable
    assert study.truth["organs"]["parotid_gland_left"]["in_field_of_view"] is False
    parotid = next(r for r in findings.references if r.name == "parotid glands")
    assert parotid.suv_mean is None and "outside the CT field of view" in parotid.note
    assert "parotid glands" in findings.mipsma_note
    spleen = next(r for r in findings.references if r.name == "spleen").suv_mean
    assert spleen is not None
    for focus in findings.foci:
        if focus.suv_max >= spleen:
            assert focus.mipsma is None and "at least 2" in focus.mipsma_note
            assert "not assessable" in focus.mipsma_note
        else:
            assert focus.mipsma in (0, 1)
    assert findings.local_category == "miTr" and "independent of the classifier" in findings.local_category_note


def test_reference_organs_whose_weights_are_missing_are_reported_not_requested(
    whole_body: Study, tmp_path: Path
) -> None:
    from inference.localize import make_localizer
    from inference.localize.totalsegmentator import AORTA_WEIGHTS, VERTEBRAE_WEIGHTS
    from inference.volume import Series

    fake = install_fake_totalsegmentator(tmp_path, whole_body.root / "ground_truth.json", head_task=False)
    (fake.home / "nnunet" / "results" / AORTA_WEIGHTS).rmdir()
    localisation = make_localizer(_totalseg(fake)).locate(Series.scan(whole_body.ct_paths))
    masks = {m.organ: m for m in localisation.reference_masks}
    assert set(masks) == {"blood pool", "spleen", "liver", "parotid glands"}
    assert masks["parotid glands"].mask is None and "head_glands_cavities" in masks["parotid glands"].note
    assert masks["blood pool"].mask is None and AORTA_WEIGHTS in masks["blood pool"].note
    assert masks["spleen"].mask is not None and masks["spleen"].affine_lps is not None
    calls = fake.recorded()
    assert len(calls) == 1 and "aorta" not in calls[0]["argv"]
    (fake.home / "nnunet" / "results" / AORTA_WEIGHTS).mkdir()
    (fake.home / "nnunet" / "results" / VERTEBRAE_WEIGHTS).rmdir()
    localisation = make_localizer(_totalseg(fake)).locate(Series.scan(whole_body.ct_paths))
    blood = next(m for m in localisation.reference_masks if m.organ == "blood pool")
    assert blood.mask is None and VERTEBRAE_WEIGHTS in blood.note and "T5-T10" in blood.note
    assert "vertebrae_T5" not in fake.recorded()[-1]["argv"]
    assert localisation.organ == "prostate"


def test_anatomical_localiser_leaves_every_score_not_assessable_and_says_why(
    whole_body: Study, tmp_path: Path
) -> None:
    result = analyse(whole_body.pet_paths, whole_body.ct_paths, _options(tmp_path))
    findings = result.findings
    assert findings is not None and findings.foci and not findings.mipsma_assessable
    assert all(r.suv_mean is None and "anatomical localiser" in r.note for r in findings.references)
    assert "anatomical localiser" in findings.mipsma_note
    for focus in findings.foci:
        assert focus.mipsma is None
        assert focus.mipsma_note.startswith("not assessable") and "anatomical localiser" in focus.mipsma_note


def test_no_focus_gives_the_negative_category_and_still_a_quantification(tmp_path: Path) -> None:
    study = make_study(tmp_path / "negative", seed=7, recurrence=False)
    result = analyse(study.pet_paths, study.ct_paths, _options(tmp_path))
    assert result.findings is not None and result.findings.foci == []
    assert result.findings.local_category == "miT0"
    assert result.findings.region_suv_max == pytest.approx(float(np.max(
        result.images.pet_suv_crop.array[result.findings.region_mask])), abs=0.01)  # type: ignore[union-attr]
    assert result.quantification is not None and result.quantification.suv_max < 4.0
    assert result.findings.region_mask is not None and result.findings.region_mask.any()


def _focus(site: str = "prostate", number: int = 1) -> Focus:
    return Focus(number, 9.0, 7.0, 6.0, 1.2, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), "separate", 30.0, None, "",
                 site=site, site_name=site)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "sites", "category"),
    [(True, ["prostate bed"], "miTr"), (True, [], "miT0"), (False, ["prostate"], "miT2u"),
     (False, ["prostate", "prostate"], "miT2m"), (False, [], "miT0"), (None, ["prostate"], None),
     (None, ["prostate bed"], None), (True, ["bone"], "miT0"), (False, ["prostate", "seminal vesicle"], "miT2u"),
     (False, ["rectum/bowel", "lymph-node region", "bladder wall"], "miT0")],
)
def test_local_category_rests_on_a_known_status_and_prostate_or_bed_foci_only(
        status: bool | None, sites: list[str], category: str | None) -> None:
    foci = [_focus(site, n) for n, site in enumerate(sites, start=1)]
    suggested, note = suggest_local_category(status, foci)
    assert suggested == category
    if category is None:
        assert note.startswith("miT not suggested: prostatectomy status unknown")
    else:
        assert note.startswith("Rule-based PROMISE V2 suggestion, independent of the classifier")
    if category in ("miT2u", "miT2m"):
        assert "not assessed" in note
    for focus in foci:
        if focus.site not in ("prostate", "prostate bed"):
            assert f"focus {focus.number} ({focus.site})" in note and "not used" in note


@pytest.mark.parametrize(
    ("site", "name", "status", "call"),
    [("prostate bed", "prostate bed", True,
      "PSMA-avid focus in the prostate-bed region; miTr if judged local recurrence"),
     ("prostate bed", "prostate bed", None,
      "PSMA-avid focus in the prostate-bed region; no miT category: prostatectomy status unknown"),
     ("bone", "pubic bone", False,
      "pubic bone: bone uptake (miM1b if metastasis; unspecific bone uptake is a known [18F]PSMA-1007 pitfall)"),
     ("lymph-node region", "left pelvic lymph-node region", False,
      "PSMA-avid focus in the left pelvic lymph-node region; miN candidate")],
)
def test_a_focus_call_is_never_an_unqualified_diagnosis(site: str, name: str, status: bool | None, call: str) -> None:
    words, _ = focus_words(SiteCall(site, name, ""), status)  # type: ignore[arg-type]
    assert words == call
    assert "local recurrence" not in words or "if judged local recurrence" in words


def test_summaries_carry_findings_without_arrays(
    whole_body_result: tuple[AnalysisResult, FakeTotalSegmentator],
) -> None:
    result, _ = whole_body_result
    summary = result.to_summary()
    text = json.dumps(summary)
    assert summary["findings"]["foci"][0]["mipsma"] is not None  # type: ignore[index]
    job = ClaimedJob(id=1, study_id=1, study_uid="1.2.3", generation=1, pet_series_uid="1", ct_series_uid="2",
                     attempts=1, flags={})
    row = summarise(result, job)
    row_text = json.dumps(row)
    assert row["findings"]["references"][0]["name"] == "blood pool"
    for serialised in (text, row_text):
        assert "mask" not in json.loads(serialised).get("findings", {}).get("foci", [{}])[0]
        assert "array(" not in serialised and "False False" not in serialised and len(serialised) < 20_000
    assert [m["organ"] for m in row["localisation"]["reference_masks"]] == [
        "blood pool", "spleen", "liver", "parotid glands"]


def test_a_given_centre_runs_no_localiser_and_says_so_for_the_references(
    whole_body: Study, tmp_path: Path
) -> None:
    result = analyse(whole_body.pet_paths, whole_body.ct_paths, _options(tmp_path),
                     center_lps=whole_body.prostate_or_bed)
    findings = result.findings
    assert findings is not None and findings.foci
    assert all(r.suv_mean is None and "centre was given" in r.note for r in findings.references)
    assert all(f.mipsma is None for f in findings.foci)
