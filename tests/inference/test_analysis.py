"""The whole analysis on synthetic studies: every field filled, weights or not, and clear failures."""

# The study fixtures are imported from tests.inference.studies and received as test parameters.
# ruff: noqa: F401, F811

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.networks.nets import DenseNet121 as monai_densenet121

import dicom_node
from inference.analysis import AnalysisError, AnalysisOptions, analyse
from inference.checkpoints import import_checkpoint
from inference.clinical import RegisteredClinical
from inference.model_specs import get_spec
from inference.result import Finding
from inference.volume import Series
from tests.inference.studies import (
    Study,
    bed_study,
    recurrence_study,
    write_random_checkpoint,
)

STAGES = {"read", "suv", "localise", "preprocess", "forward", "gradcam"}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Randomly initialised D and C checkpoints, imported the real way."""
    root = tmp_path_factory.mktemp("models")
    for model_id, seed in (("D", 1), ("C", 2)):
        source = write_random_checkpoint(root / f"{model_id}.pt", seed=seed)
        import_checkpoint(source, get_spec(model_id), root / "installed")
    return root / "installed"


def test_with_weights_every_field_of_the_result_is_filled(
    recurrence_study: Study,
    models_dir: Path,
) -> None:
    truth = recurrence_study.truth
    options = AnalysisOptions(models_dir=models_dir, device="cpu", software_version=dicom_node.__version__)
    result = analyse(recurrence_study.pet_paths, recurrence_study.ct_paths, options)
    assert result.classifier_run and result.model_id == "D"
    assert result.probability is not None and 0.0 <= result.probability <= 1.0
    # The clinical channels come from the study's own tags (ground truth), scaled as the authors did.
    assert result.model_input is not None
    assert np.all(result.model_input[2] == np.float32(truth["psa"] / 7434.0))
    assert np.all(result.model_input[3] == np.float32(1.0 if truth["prostatectomy"] else 0.0))
    # An independent forward pass: MONAI's DenseNet121 with the weights read straight from the source file.
    oracle = monai_densenet121(spatial_dims=3, in_channels=4, out_channels=2)
    oracle.load_state_dict(torch.load(models_dir.parent / "D.pt", weights_only=True)["net"])
    oracle.eval()
    with torch.inference_mode():
        logits = oracle(torch.from_numpy(result.model_input.astype(np.float32))[None])[0]
    probability = float(torch.softmax(logits, dim=0)[1])
    assert result.probability == pytest.approx(probability, abs=1e-5)
    assert result.finding == (Finding.PRESENT if probability >= 0.5 else Finding.ABSENT)
    installed = models_dir / "D" / "model_D.pt"
    assert result.weights_sha256 == hashlib.sha256(installed.read_bytes()).hexdigest()
    assert result.software_version == dicom_node.__version__
    assert result.device == "cpu"
    assert STAGES <= set(result.timings)
    assert (result.pet_series_uid, result.ct_series_uid) == (truth["pet_series_uid"], truth["ct_series_uid"])
    assert result.suv_factor == pytest.approx(truth["suv_factor"], rel=1e-6)
    assert (result.psa.value, result.psa.source) == (3.2, "tag")
    assert (result.prostatectomy.value, result.prostatectomy.source) == (False, "tag")
    assert result.localisation.organ == "prostate"
    assert np.linalg.norm(np.array(result.localisation.center_lps) - truth["prostate_centroid_lps"]) < 20
    assert result.quantification is not None
    assert result.quantification.suv_max == pytest.approx(truth["lesion_suv_max"], rel=0.2)
    assert result.model_input is not None and result.model_input.shape == (4, 65, 46, 69)
    images = result.images
    assert images is not None and images.attention is not None
    assert images.attention.array.shape == images.pet_suv_crop.array.shape
    assert np.array_equal(images.attention.affine_lps, images.pet_suv_crop.affine_lps)
    assert np.all(np.isfinite(images.attention.array))
    low, high = images.crop_box_lps  # type: ignore[misc]
    assert np.allclose(np.array(high) - np.array(low), 200.0)
    assert "NOT FOR DIAGNOSTIC USE" in result.published_performance
    summary = result.to_summary()
    assert summary["finding"] == result.finding.value and summary["not_for_diagnostic_use"] is True


def test_threshold_decides_present_or_absent(recurrence_study: Study, models_dir: Path) -> None:
    center = recurrence_study.prostate_or_bed
    always = AnalysisOptions(models_dir=models_dir, device="cpu", threshold=0.0, gradcam=False)
    never = AnalysisOptions(models_dir=models_dir, device="cpu", threshold=1.0, gradcam=False)
    first = analyse(recurrence_study.pet_paths, recurrence_study.ct_paths, always, center_lps=center)
    second = analyse(recurrence_study.pet_paths, recurrence_study.ct_paths, never, center_lps=center)
    assert first.finding == Finding.PRESENT and second.finding == Finding.ABSENT
    assert first.probability == second.probability
    assert first.images is not None and first.images.attention is None


def test_by_prostatectomy_routing_runs_model_c_for_operated_patients(
    bed_study: Study,
    models_dir: Path,
) -> None:
    options = AnalysisOptions(models_dir=models_dir, device="cpu", routing="by-prostatectomy", gradcam=False)
    result = analyse(bed_study.pet_paths, bed_study.ct_paths, options)
    assert result.localisation.organ == "bladder"
    assert (result.prostatectomy.value, result.prostatectomy.source) == (True, "imputed")
    assert (result.psa.value, result.psa.source) == (30.1, "imputed")
    assert result.model_id == "C" and result.classifier_run
    assert result.model_input is not None and result.model_input.shape == (4, 30, 40, 30)
    assert np.all(result.model_input[2] == np.float32(30.1 / 7434)) and np.all(result.model_input[3] == 1.0)


def test_without_weights_the_quantification_is_still_reported(
    bed_study: Study,
    tmp_path: Path,
) -> None:
    truth = bed_study.truth
    options = AnalysisOptions(models_dir=tmp_path / "empty")
    registered = RegisteredClinical(psa_ng_ml=0.8, prostatectomy=True, detail="registered via cli")
    result = analyse(bed_study.pet_paths, bed_study.ct_paths, options, registered=registered)
    assert result.finding == Finding.UNDETERMINED and result.probability is None
    assert not result.classifier_run and result.weights_sha256 is None
    assert "not installed" in result.classifier_note and "zenodo.15174580" in result.classifier_note
    assert "psma-node models import FILE --as D" in result.classifier_note
    assert (result.psa.value, result.psa.source) == (0.8, "given")
    quant = result.quantification
    assert quant is not None
    assert abs(quant.suv_max - truth["lesion_suv_max"]) <= 0.2 * truth["lesion_suv_max"]
    pet_voxel = max(truth["pet_spacing_mm"])
    assert np.linalg.norm(np.array(quant.suv_max_lps) - truth["lesion_center_lps"]) <= 1.5 * pet_voxel
    assert result.model_input is not None and result.model_input.shape == (4, 65, 46, 69)
    assert "forward" not in result.timings


def test_only_the_slices_of_the_cube_are_decoded(
    recurrence_study: Study,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[tuple[str, int]] = []
    original = Series.read

    def spy(self: Series, k_range: tuple[int, int] | None = None, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        volume = original(self, k_range, *args, **kwargs)  # type: ignore[arg-type]
        decoded.append((self.modality, volume.array.shape[2]))
        return volume

    monkeypatch.setattr(Series, "read", spy)
    options = AnalysisOptions(models_dir=tmp_path / "empty")
    analyse(
        recurrence_study.pet_paths,
        recurrence_study.ct_paths,
        options,
        center_lps=recurrence_study.prostate_or_bed,
    )
    ct_slices = sum(n for modality, n in decoded if modality == "CT")
    pet_slices = sum(n for modality, n in decoded if modality == "PT")
    truth = recurrence_study.truth
    assert ct_slices <= 200 / truth["ct_spacing_mm"][2] + 2 < truth["ct_shape"][2]
    assert pet_slices <= 200 / truth["pet_spacing_mm"][2] + 2 < truth["pet_shape"][2]


def test_a_cube_outside_the_images_is_a_clear_error(recurrence_study: Study, tmp_path: Path) -> None:
    with pytest.raises(AnalysisError, match="does not overlap the CT") as raised:
        analyse(
            recurrence_study.pet_paths,
            recurrence_study.ct_paths,
            AnalysisOptions(models_dir=tmp_path),
            center_lps=(0.0, 0.0, 2000.0),
        )
    assert raised.value.stage == "preprocess"


def test_pet_headers_without_a_usable_suv_are_a_clear_error(
    recurrence_study: Study,
    tmp_path: Path,
) -> None:
    broken = tmp_path / "PT"
    broken.mkdir()
    for path in recurrence_study.pet_paths:
        dataset = pydicom.dcmread(path)
        dataset.PatientWeight = 0
        dataset.save_as(broken / path.name)
    with pytest.raises(AnalysisError, match="^suv: .*[Ww]eight") as raised:
        analyse(sorted(broken.glob("*.dcm")), recurrence_study.ct_paths, AnalysisOptions(models_dir=tmp_path))
    assert raised.value.stage == "suv"


def test_swapped_series_are_refused(recurrence_study: Study, tmp_path: Path) -> None:
    with pytest.raises(AnalysisError, match="modality 'CT', expected PT"):
        analyse(recurrence_study.ct_paths, recurrence_study.pet_paths, AnalysisOptions(models_dir=tmp_path))


def test_an_unknown_model_is_refused(
    recurrence_study: Study,
    tmp_path: Path,
) -> None:
    with pytest.raises(AnalysisError, match="unknown model 'E'"):
        analyse(
            recurrence_study.pet_paths,
            recurrence_study.ct_paths,
            AnalysisOptions(models_dir=tmp_path),
            center_lps=recurrence_study.prostate_or_bed,
            model_id="E",
        )
