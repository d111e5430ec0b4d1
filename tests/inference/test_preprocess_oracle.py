"""The network input equals what the authors' own pipeline gives (dcm2niix + nibabel + their crop + MONAI).

The reference is rebuilt here independently of the node's code: dcm2niix converts the DICOM folders,
nibabel loads them without reorientation, the cube is cut with the NIfTI affine as in the authors'
`crop_by_prostate_or_ub.py`, the PET is multiplied by the ground-truth SUV factor, the crops go through a
NIfTI file and MONAI's LoadImage like the authors' cropped files did, then their validation transforms.
The node's input comes from `psma-node analyze --dump-input`.
"""

# The study fixtures are imported from tests.inference.studies and received as test parameters.
# ruff: noqa: F401, F811

from __future__ import annotations

import subprocess
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from monai.transforms import (
    CenterSpatialCrop,
    Compose,
    LoadImage,
    Resize,
    ScaleIntensity,
    ScaleIntensityRange,
)

from dicom_node.cli.main import cli
from tests.inference.studies import Study, recurrence_study
from tests.support.tools import require_tool

TOLERANCE = 1e-4


def _dcm2niix(series_dir: Path, out: Path) -> nibabel.Nifti1Image:
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [require_tool("dcm2niix"), "-z", "y", "-f", "%s", "-o", str(out), str(series_dir)],
        check=True,
        capture_output=True,
    )
    files = sorted(out.glob("*.nii.gz"))
    assert len(files) == 1, files
    return nibabel.load(files[0])


def _authors_crop(image: nibabel.Nifti1Image, center_lps: tuple[float, float, float]) -> np.ndarray:
    center_ras = np.array([-center_lps[0], -center_lps[1], center_lps[2]])
    inverse = np.linalg.inv(image.affine[:3, :3])

    def to_index(point: np.ndarray) -> np.ndarray:
        return np.clip(np.round(inverse @ (point - image.affine[:3, 3])), [0, 0, 0], image.shape).astype(
            np.int16
        )

    start, end = to_index(center_ras - 100), to_index(center_ras + 100)
    low, high = np.minimum(start, end), np.maximum(start, end)
    return np.array(image.dataobj)[low[0] : high[0], low[1] : high[1], low[2] : high[2]]


def _through_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> torch.Tensor:
    nibabel.save(nibabel.Nifti1Image(array.astype(np.float32), affine), path)
    return torch.as_tensor(LoadImage(image_only=True, ensure_channel_first=True)(path))


def reference_input(
    study: Study, work: Path, model: str, center_lps: tuple[float, float, float], psa: float, px: bool
) -> np.ndarray:
    ct = _dcm2niix(study.root / "CT", work / "nifti_ct")
    pet = _dcm2niix(study.root / "PT", work / "nifti_pet")
    if model == "A":
        ct_array, pet_array = np.asarray(ct.dataobj), np.asarray(pet.dataobj)
    else:
        ct_array = _authors_crop(ct, center_lps)
        pet_array = _authors_crop(pet, center_lps) * study.truth["suv_factor"]
    ct_t = _through_nifti(ct_array, ct.affine, work / "ct_crop.nii.gz")
    pet_t = _through_nifti(pet_array, pet.affine, work / "pet_crop.nii.gz")
    size, roi = {
        "A": ((150,) * 3, None),
        "B": ((70,) * 3, None),
        "C": ((70,) * 3, (30, 40, 30)),
        "C-range": ((70,) * 3, (30, 40, 30)),
        "D": ((70,) * 3, (65, 46, 69)),
        "D-range": ((70,) * 3, (65, 46, 69)),
    }[model]
    # Model_C.py scales per volume like D; only Model_C_scaleRange.py (C-range) uses the fixed range.
    fixed_range = model in ("C-range", "D-range")
    tail = [Resize(spatial_size=size)] + ([CenterSpatialCrop(roi_size=roi)] if roi else [])
    ct_scale = (
        ScaleIntensityRange(a_min=-1024, a_max=3071, b_min=0, b_max=1, clip=False)
        if fixed_range
        else ScaleIntensity()
    )
    pet_scale = (
        ScaleIntensityRange(a_min=0, a_max=106, b_min=0, b_max=1, clip=False)
        if fixed_range
        else ScaleIntensity()
    )
    channels = [
        torch.as_tensor(Compose([ct_scale, *tail])(ct_t)),
        torch.as_tensor(Compose([pet_scale, *tail])(pet_t)),
    ]
    if model in ("C", "C-range", "D", "D-range"):
        spatial = channels[0].shape[1:]
        channels.append(torch.Tensor([psa / 7434.0]).repeat(1, *spatial))
        channels.append(torch.Tensor([1.0 if px else 0.0]).repeat(1, *spatial))
    return torch.cat(channels, dim=0).numpy()


def node_input(
    study: Study, work: Path, model: str, center_lps: tuple[float, float, float], psa: float, px: bool
) -> np.ndarray:
    config = work / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": {"models_dir": str(work / "models")},
                "database": {"url": f"sqlite:///{work / 'node.db'}"},
            }
        )
    )
    dump = work / "input.npy"
    center = ",".join(f"{v:.3f}" for v in center_lps)
    outcome = CliRunner().invoke(
        cli,
        [
            "--config",
            str(config),
            "analyze",
            str(study.root),
            f"--center-lps={center}",
            "--model",
            model,
            "--psa",
            str(psa),
            "--prostatectomy",
            "yes" if px else "no",
            "--dump-input",
            str(dump),
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    return np.load(dump)


@pytest.mark.parametrize(
    ("model", "px"),
    [("D", False), ("D-range", False), ("C", True), ("C-range", True), ("B", False), ("A", False)],
)
def test_model_input_equals_authors_pipeline_on_different_grids(
    recurrence_study: Study,
    tmp_path: Path,
    model: str,
    px: bool,
) -> None:
    center = recurrence_study.prostate_or_bed
    expected = reference_input(recurrence_study, tmp_path, model, center, psa=3.2, px=px)
    actual = node_input(recurrence_study, tmp_path, model, center, psa=3.2, px=px)
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    assert np.max(np.abs(actual - expected)) <= TOLERANCE


@pytest.mark.parametrize("model", ["D", "D-range"])
def test_model_input_equals_authors_pipeline_when_the_cube_is_clipped_at_the_image_edge(
    recurrence_study: Study,
    tmp_path: Path,
    model: str,
) -> None:
    # Near the right-lateral edge of the CT field of view and below the first slice: the cube is clipped
    # in x (both grids) and in z.
    center = (-215.0, 30.0, -60.0)
    expected = reference_input(recurrence_study, tmp_path, model, center, psa=12.5, px=False)
    actual = node_input(recurrence_study, tmp_path, model, center, psa=12.5, px=False)
    assert actual.shape == expected.shape == (4, 65, 46, 69)
    assert np.max(np.abs(actual - expected)) <= TOLERANCE


def test_clipped_cube_really_is_smaller_than_200_mm(recurrence_study: Study) -> None:
    from inference.preprocess import cube_box
    from inference.volume import Series

    ct = Series.scan(recurrence_study.ct_paths)
    box = cube_box(ct.affine_lps, ct.shape, (-215.0, 30.0, -60.0))
    spacing = np.linalg.norm(ct.affine_lps[:3, :3], axis=0)
    extent = np.array(box.shape) * spacing
    assert extent[0] < 150 and extent[2] < 170 and 190 <= extent[1] <= 210
