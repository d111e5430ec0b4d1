"""Where each focus lies, on a synthetic study with foci at known sites: the prostate, the pubic bone, the
rectal wall and a seminal vesicle. With the anatomical localiser the CT alone decides (bone density, bowel
gas, position); with TotalSegmentator (the stand-in drawing the generator's ground truth) its masks do."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.analysis import AnalysisOptions, analyse
from inference.focus_site import SiteContext, classify_site
from inference.localize import LocalizerOptions
from inference.result import AnalysisResult, Focus
from inference.volume import Volume
from tests.inference.studies import Study, make_study
from tests.support.fake_totalsegmentator import install_fake_totalsegmentator

SITES = {"prostate": "prostate", "pubic_bone": "bone", "rectal_wall": "rectum/bowel",
         "seminal_vesicle": "seminal vesicle"}


@pytest.fixture(scope="module")
def site_study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """Prostate in situ (tagged), a recurrence in it, and a focus at each named site."""
    return make_study(tmp_path_factory.mktemp("sites"), seed=12, ct_matrix=128, pet_matrix=128, pet_fov_mm=400.0,
                      site_foci=("pubic_bone", "rectal_wall", "seminal_vesicle"))


def _analyse(study: Study, tmp: Path, totalsegmentator: bool) -> AnalysisResult:
    localizer = LocalizerOptions()
    if totalsegmentator:
        fake = install_fake_totalsegmentator(tmp / "totalseg", study.root / "ground_truth.json")
        localizer = LocalizerOptions(kind="totalsegmentator", totalsegmentator_command=str(fake.executable),
                                     totalsegmentator_home=fake.home)
    return analyse(study.pet_paths, study.ct_paths, AnalysisOptions(models_dir=tmp / "none", localizer=localizer))


def _by_truth(study: Study, result: AnalysisResult) -> dict[str, Focus]:
    assert result.findings is not None
    found = {}
    for truth in study.truth["foci"]:
        centre = np.array(truth["center_lps"])
        found[truth["kind"]] = min(result.findings.foci,
                                   key=lambda f: float(np.linalg.norm(np.array(f.suv_max_lps) - centre)))
    return found


@pytest.mark.parametrize("totalsegmentator", [False, True], ids=["ct-only", "totalsegmentator"])
def test_each_focus_gets_its_site_and_only_the_prostate_focus_feeds_the_category(
        site_study: Study, tmp_path: Path, totalsegmentator: bool) -> None:
    result = _analyse(site_study, tmp_path, totalsegmentator)
    assert result.findings is not None and len(result.findings.foci) == 4
    found = _by_truth(site_study, result)
    assert {kind: focus.site for kind, focus in found.items()} == SITES
    bone = found["pubic_bone"]
    assert bone.where in ("pubic bone", "left pubic bone") and "HU" in bone.site_evidence
    assert bone.call == (f"{bone.where}: bone uptake (miM1b if metastasis; unspecific bone uptake is a known "
                         "[18F]PSMA-1007 pitfall)")
    assert found["rectal_wall"].where == "rectal wall"
    assert ("colon mask" if totalsegmentator else "bowel gas") in found["rectal_wall"].site_evidence
    assert found["seminal_vesicle"].where == "left seminal vesicle"
    assert found["seminal_vesicle"].category_hint == "miT3b if judged tumour"
    assert found["prostate"].call.startswith("PSMA-avid focus in the prostate; miT2 if judged tumour")
    assert result.findings.local_category == "miT2u"
    assert "1 focus in the prostate" in result.findings.local_category_note
    for kind in ("pubic_bone", "rectal_wall", "seminal_vesicle"):
        assert f"focus {found[kind].number} ({found[kind].where})" in result.findings.local_category_note


def test_after_prostatectomy_the_bed_focus_reads_as_a_possible_recurrence(tmp_path: Path) -> None:
    study = make_study(tmp_path / "bed", seed=5, prostatectomy=True)
    result = analyse(study.pet_paths, study.ct_paths, AnalysisOptions(models_dir=tmp_path / "none"))
    assert result.findings is not None and [f.site for f in result.findings.foci] == ["prostate bed"]
    focus = result.findings.foci[0]
    assert focus.call == "PSMA-avid focus in the prostate-bed region; miTr if judged local recurrence"
    assert result.findings.local_category == "miTr"


def _ct_with(value_at: dict[tuple[int, int, int], float], fill: float = 40.0) -> Volume:
    """A 1 mm CT of 80 mm (x towards the patient's left, y posterior, z cranial) with blocks of other HU."""
    array = np.full((80, 80, 80), fill, dtype=np.float32)
    for (i, j, k), value in value_at.items():
        array[i - 6:i + 7, j - 6:j + 7, k - 6:k + 7] = value
    return Volume(array, np.diag([1.0, 1.0, 1.0, 1.0]))


@pytest.mark.parametrize(
    ("ct", "point", "operated", "relation", "site", "name"),
    [
        (_ct_with({(44, 22, 44): 300.0}), (44, 22, 44), False, "separate", "bone", "pubic bone"),
        (_ct_with({(40, 70, 40): 300.0}), (40, 70, 40), True, "separate", "bone", "sacrum/coccyx"),
        (_ct_with({(46, 64, 32): -900.0}), (40, 64, 32), False, "separate", "rectum/bowel", "rectal wall"),
        (_ct_with({}), (41, 42, 41), False, "separate", "prostate", "prostate"),
        (_ct_with({}), (41, 44, 30), True, "separate", "prostate bed", "prostate bed"),
        (_ct_with({}), (56, 50, 58), False, "separate", "seminal vesicle", "left seminal vesicle"),
        (_ct_with({}, fill=-100.0), (10, 40, 45), True, "separate", "lymph-node region",
         "right pelvic lymph-node region"),
        (_ct_with({}), (10, 40, 45), True, "separate", "other", "pelvic soft tissue"),
        (_ct_with({}), (30, 30, 62), True, "touching", "bladder wall", "bladder wall"),
    ],
)
def test_site_rules_in_their_order(ct: Volume, point: tuple[int, int, int], operated: bool, relation: str,
                                   site: str, name: str) -> None:
    """The CT rules on a hand-made CT: region centre (40, 40, 40), bladder base at (40, 30, 50)."""
    context = SiteContext(ct=ct, centre_lps=np.array([40.0, 40.0, 40.0]), operated=operated,
                          bladder_base_lps=np.array([40.0, 30.0, 50.0]))
    call = classify_site(np.array(point, dtype=float), relation, context)  # type: ignore[arg-type]
    assert (call.site, call.name) == (site, name), call.evidence
