"""The miPSMA score's references: the order PROMISE presumes, the evidence shown beside each score, the
parotid glands per side, and the blood pool as the descending thoracic aorta between T5 and T10."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from inference.localize.totalsegmentator import BLOOD_POOL_LEVELS, descending_thoracic_aorta
from inference.reference_organs import ReferenceScorer
from inference.result import ReferenceOrgan


def _scorer(blood: float | None, spleen: float | None, parotid: float | None) -> ReferenceScorer:
    return ReferenceScorer([ReferenceOrgan("blood pool", blood, "aorta"), ReferenceOrgan("spleen", spleen, "spleen"),
                            ReferenceOrgan("liver", 12.0, "liver"),
                            ReferenceOrgan("parotid glands", parotid, "parotids", note="" if parotid else "absent")],
                           "spleen", "tracer PSMA-1007")


@pytest.mark.parametrize(
    ("suv_max", "score", "evidence"),
    [(1.5, 0, "miPSMA 0 (< blood pool 1.8)"), (5.0, 1, "miPSMA 1 (≥ blood pool 1.8, < spleen 9.1)"),
     (12.0, 2, "miPSMA 2 (≥ spleen 9.1, < parotid 14.2)"), (20.0, 3, "miPSMA 3 (≥ parotid 14.2)")],
)
def test_each_score_names_its_references(suv_max: float, score: int, evidence: str) -> None:
    result = _scorer(1.8, 9.1, 14.2).score(suv_max)
    assert (result.value, result.evidence) == (score, evidence)


def test_a_missing_parotid_bounds_the_score_and_says_so() -> None:
    result = _scorer(1.8, 9.1, None).score(12.0)
    assert result.value is None and result.evidence == "miPSMA ≥ 2 (≥ spleen 9.1; no parotid)"
    assert "at least 2" in result.note


@pytest.mark.parametrize(("blood", "spleen", "parotid", "higher"),
                         [(1.8, 16.0, 14.2, "spleen SUVbw mean 16.0 ≥ parotid glands SUVbw mean 14.2"),
                          (9.5, 9.1, 14.2, "blood pool SUVbw mean 9.5 ≥ spleen SUVbw mean 9.1"),
                          (1.8, 16.0, None, None)])
def test_references_in_an_implausible_order_make_every_score_not_assessable(
        blood: float, spleen: float, parotid: float | None, higher: str | None) -> None:
    scorer = _scorer(blood, spleen, parotid)
    if higher is None:  # a missing reference cannot be out of order
        assert scorer.order_problem is None
        return
    assert not scorer.assessable and higher in (scorer.order_problem or "")
    assert "implausible reference order" in scorer.note
    for suv_max in (1.0, 10.0, 30.0):
        result = scorer.score(suv_max)
        assert result.value is None and result.evidence == "miPSMA not assessable (implausible references)"
        assert higher in result.note


def _save(folder: Path, name: str, mask: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine), str(folder / f"{name}.nii.gz"))


def test_blood_pool_is_the_descending_aorta_between_t5_and_t10_nearest_the_spine(tmp_path: Path) -> None:
    """Two aortic cross-sections per slice (ascending in front, descending behind); only the one nearest
    the spine, and only between the top of T5 and the bottom of T10, is the blood pool."""
    shape = (40, 40, 60)
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])  # RAS: i towards the right, j towards posterior, k cranial
    aorta = np.zeros(shape, dtype=bool)
    aorta[10:14, 8:12, :] = True  # anterior (small j = anterior): ascending aorta
    aorta[18:22, 28:32, :] = True  # posterior: descending aorta
    levels = {name: np.zeros(shape, dtype=bool) for name in BLOOD_POOL_LEVELS}
    for n, name in enumerate(BLOOD_POOL_LEVELS):  # T5 at the top (k 40-44) down to T10 (k 15-19)
        k = 40 - 5 * n
        levels[name][16:24, 33:38, k:k + 5] = True
    _save(tmp_path, "aorta", aorta, affine)
    for name, mask in levels.items():
        _save(tmp_path, name, mask, affine)
    found = descending_thoracic_aorta(tmp_path)
    assert found.mask is not None and found.affine_lps is not None
    assert int(found.mask.sum()) == 16 * (45 - 15)
    index = np.argwhere(found.mask)
    lps = (found.affine_lps[:3, :3] @ index.T).T + found.affine_lps[:3, 3]
    assert np.all(lps[:, 1] >= 28 * 2.0 - 0.1)  # LPS y = -RAS y = 2 j: only the posterior tube
    assert lps[:, 2].min() == pytest.approx(15 * 3.0) and lps[:, 2].max() == pytest.approx(44 * 3.0)
    assert "T5" in found.source and "nearest the spine" in found.source


def test_blood_pool_without_vertebrae_in_view_says_so(tmp_path: Path) -> None:
    affine = np.diag([-2.0, -2.0, 3.0, 1.0])
    aorta = np.zeros((10, 10, 10), dtype=bool)
    aorta[4:6, 4:6, :] = True
    _save(tmp_path, "aorta", aorta, affine)
    for name in BLOOD_POOL_LEVELS:
        _save(tmp_path, name, np.zeros((10, 10, 10), dtype=bool), affine)
    found = descending_thoracic_aorta(tmp_path)
    assert found.mask is None and "outside the CT field of view" in found.note
