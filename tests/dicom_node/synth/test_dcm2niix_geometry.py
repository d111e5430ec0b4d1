"""dcm2niix (the converter the published model was trained with) places the ground-truth organs correctly."""

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np

from tests.support.dicom import StudyMaker
from tests.support.tools import require_tool


def _convert(folder: Path, modality: str, out: Path) -> nib.Nifti1Image:
    out.mkdir()
    command = [require_tool("dcm2niix"), "-z", "n", "-f", modality, "-o", str(out), str(folder / modality)]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return nib.load(next(out.glob(f"{modality}*.nii")))


def _value_at_lps(image: nib.Nifti1Image, lps: list[float]) -> float:
    ras = np.array([-lps[0], -lps[1], lps[2], 1.0])
    ijk = np.rint(np.linalg.inv(image.affine) @ ras)[:3].astype(int)
    return float(np.asarray(image.dataobj)[tuple(ijk)])


def test_dcm2niix_volumes_put_organs_and_lesion_where_the_ground_truth_says(
        small_study: StudyMaker, tmp_path: Path) -> None:
    folder, truth = small_study(vendor="ge", nodal_lesions=1)
    ct = _convert(folder, "CT", tmp_path / "ct")
    pet = _convert(folder, "PT", tmp_path / "pt")
    assert ct.shape == tuple(truth.ct_shape) and pet.shape == tuple(truth.pet_shape)
    assert truth.prostate_centroid_lps is not None and truth.lesion_center_lps is not None
    assert 15 <= _value_at_lps(ct, truth.prostate_centroid_lps) <= 65
    assert -20 <= _value_at_lps(ct, truth.bladder_centroid_lps) <= 35
    # dcm2niix scales PET to Bq/ml; the lesion centre is far hotter than the bladder.
    lesion = _value_at_lps(pet, truth.lesion_center_lps) * truth.suv_factor
    assert lesion > 0.5 * truth.lesion_suv_max
    assert lesion > 2 * _value_at_lps(pet, truth.bladder_centroid_lps) * truth.suv_factor
