"""Per-focus measures against an independent, IBSI-compliant implementation: MIRP (PyPI `mirp`).

Each focus's isocontour and the PET crop (SUVbw) are written as NIfTI files with the crop's spacing and fed
to MIRP without resampling or discretisation; the node's values must agree with MIRP's IBSI features:

| node | IBSI feature (id) | MIRP column | tolerance |
|---|---|---|---|
| SUVbw max | intensity-based statistics, maximum intensity (84IY) | stat_max | 0.006 (rounded to 0.01) |
| SUVbw mean | intensity-based statistics, mean intensity (Q4LE) | stat_mean | 0.006 |
| Volume | morphology, approximate volume: voxel count x voxel volume (YEKZ) | morph_vol_approx | 0.006 ml |
| SUVbw peak | local intensity, global intensity peak: the highest mean of a 1 cm³ sphere centred on an ROI voxel, voxel centres inside (0F91) | loc_peak_glob | 0.006 |

SUVbw peak deviates from 0F91 in one respect only: voxels of the bladder and of other foci never enter its
sphere. The comparison is therefore made for foci farther than the sphere radius from both, and the test
insists there is at least one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from inference.analysis import AnalysisOptions, analyse
from inference.findings import PEAK_SPHERE_RADIUS_MM
from inference.result import AnalysisResult
from tests.inference.studies import make_study

pytestmark = pytest.mark.slow
TOLERANCE = 0.006
"""The node reports SUVs and volumes to 0.01; MIRP computes in double precision."""


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> AnalysisResult:
    """Two foci in an intact prostate on 3.1 mm PET voxels (so the 1 cm³ sphere holds 27 voxels)."""
    root = tmp_path_factory.mktemp("oracle")
    study = make_study(root / "study", seed=16, extra_foci=1, ct_matrix=128, pet_matrix=128, pet_fov_mm=400.0)
    return analyse(study.pet_paths, study.ct_paths, AnalysisOptions(models_dir=root / "no-models"))


def _mirp(image: Path, mask: Path) -> dict[str, float]:
    from mirp import extract_features

    logging.getLogger("mirp").setLevel(logging.WARNING)
    table = extract_features(image=str(image), mask=str(mask), image_modality="pet",
                             base_feature_families=["statistics", "local_intensity", "morphology"],
                             export_features=True, write_features=False)[0]
    return {name: float(table[name].iloc[0]) for name in ("stat_max", "stat_mean", "morph_vol_approx",
                                                           "loc_peak_glob")}


def test_suvbw_max_mean_peak_and_volume_follow_ibsi_as_mirp_computes_them(
        analysed: AnalysisResult, tmp_path: Path) -> None:
    findings, images = analysed.findings, analysed.images
    assert findings is not None and images is not None and len(findings.foci) >= 2
    crop = images.pet_suv_crop
    image = tmp_path / "suv.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(crop.array, dtype=np.float32), crop.affine_ras), str(image))
    reach = np.array([int(np.ceil(PEAK_SPHERE_RADIUS_MM / s)) for s in crop.spacing])
    ball = np.linalg.norm((np.indices(2 * reach + 1).T - reach) * np.array(crop.spacing), axis=-1).T
    peaks_compared = 0
    for focus in findings.foci:
        assert focus.mask is not None
        mask = tmp_path / f"focus-{focus.number}.nii.gz"
        nib.save(nib.Nifti1Image(focus.mask.astype(np.uint8), crop.affine_ras), str(mask))
        oracle = _mirp(image, mask)
        assert focus.suv_max == pytest.approx(oracle["stat_max"], abs=TOLERANCE)
        assert focus.suv_mean == pytest.approx(oracle["stat_mean"], abs=TOLERANCE)
        assert focus.volume_ml == pytest.approx(oracle["morph_vol_approx"] / 1000.0, abs=TOLERANCE)
        others = np.zeros(focus.mask.shape, dtype=bool)
        for other in findings.foci:
            if other.number != focus.number and other.mask is not None:
                others |= other.mask
        if findings.bladder_mask is not None:
            others |= findings.bladder_mask
        near = ndimage.binary_dilation(others, structure=ball <= PEAK_SPHERE_RADIUS_MM)
        if (near & focus.mask).any():
            assert focus.suv_peak is None or focus.suv_peak <= focus.suv_max
            continue
        assert focus.suv_peak == pytest.approx(oracle["loc_peak_glob"], abs=TOLERANCE)
        assert focus.suv_peak_ml == pytest.approx(27 * float(np.prod(crop.spacing)) / 1000.0, abs=0.01)
        peaks_compared += 1
    assert peaks_compared >= 1
