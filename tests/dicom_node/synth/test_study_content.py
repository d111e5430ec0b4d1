"""Anatomy, clinical metadata and variants: what a localiser, an assembler or a report stage will read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_node.synth import GroundTruth, SynthOptions, generate_study
from tests.support.dicom import StudyMaker


def _series(folder: Path, modality: str) -> list[Dataset]:
    datasets = [pydicom.dcmread(p) for p in sorted((folder / modality).glob("*.dcm"))]
    return sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


def _value_at(series: list[Dataset], lps: list[float], radius_mm: float = 4.0) -> float:
    """Mean rescaled value in a small cube around an LPS point."""
    first = series[0]
    spacing = float(first.PixelSpacing[0])
    zs = np.array([float(ds.ImagePositionPatient[2]) for ds in series])
    xs = float(first.ImagePositionPatient[0]) + np.arange(int(first.Columns)) * spacing
    ys = float(first.ImagePositionPatient[1]) + np.arange(int(first.Rows)) * spacing
    near_z = np.flatnonzero(np.abs(zs - lps[2]) <= max(radius_mm, (zs[1] - zs[0]) / 2))
    near_y = np.flatnonzero(np.abs(ys - lps[1]) <= max(radius_mm, spacing / 2))
    near_x = np.flatnonzero(np.abs(xs - lps[0]) <= max(radius_mm, spacing / 2))
    values = [series[k].pixel_array[np.ix_(near_y, near_x)] * float(series[k].RescaleSlope)
              + float(series[k].RescaleIntercept) for k in near_z]
    return float(np.mean(values))


def test_ct_series_geometry_and_identity(small_study: StudyMaker) -> None:
    folder, truth = small_study()
    series = _series(folder, "CT")
    assert len(series) == truth.n_ct_files == truth.ct_shape[2]
    assert sorted(int(ds.InstanceNumber) for ds in series) == list(range(1, len(series) + 1))
    steps = np.diff([float(ds.ImagePositionPatient[2]) for ds in series])
    np.testing.assert_allclose(steps, 3.0, atol=1e-3)
    first = series[0]
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert list(first.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert float(first.RescaleIntercept) == -1024 and float(first.RescaleSlope) == 1
    assert [float(v) for v in first.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
    assert float(first.PixelSpacing[0]) * int(first.Columns) == pytest.approx(500.0)
    assert {ds.StudyInstanceUID for ds in series} == {truth.study_uid}
    assert {ds.FrameOfReferenceUID for ds in series} == {truth.frame_of_reference_uid}
    assert {ds.SeriesInstanceUID for ds in series} == {truth.ct_series_uid}
    assert first.PatientName == "SYNTH^PSMA0" and first.PatientID == truth.patient_id
    assert first.AccessionNumber == truth.accession_number and first.Manufacturer == "SIEMENS"
    assert first.AdditionalPatientHistory == "PSA 3.2 ng/ml; no prostatectomy"


def test_ct_and_pet_show_the_same_organs(small_study: StudyMaker) -> None:
    folder, truth = small_study(recurrence=False)
    ct, pet = _series(folder, "CT"), _series(folder, "PT")
    assert truth.prostate_centroid_lps is not None
    assert 20 <= _value_at(ct, truth.prostate_centroid_lps) <= 60
    assert -5 <= _value_at(ct, truth.bladder_centroid_lps) <= 20
    suv = truth.suv_factor
    assert 1.5 <= _value_at(pet, truth.prostate_centroid_lps) * suv <= 3.5
    assert 1.5 <= _value_at(pet, truth.bladder_centroid_lps, 10) * suv <= 6.5
    prostate, bladder = np.array(truth.prostate_centroid_lps), np.array(truth.bladder_centroid_lps)
    assert bladder[2] > prostate[2] + 20 and bladder[1] < prostate[1]
    assert abs(prostate[2]) <= 25


def test_whole_body_extent_reaches_liver_and_kidneys(small_study: StudyMaker) -> None:
    folder, truth = small_study(extent_mm=600.0, ct_matrix=64, pet_matrix=48)
    assert truth.z_range_mm[1] - truth.z_range_mm[0] == 600
    pet = _series(folder, "PT")
    suv = np.stack([ds.pixel_array * float(ds.RescaleSlope) for ds in pet]) * truth.suv_factor
    zs = np.array([float(ds.ImagePositionPatient[2]) for ds in pet])
    upper = suv[zs > 220]
    assert upper.max() > 12, "kidneys (SUV 20-30) should be the hottest organ above the pelvis"
    assert pet[0].BodyPartExamined == "WHOLEBODY"


def test_prostatectomy_leaves_an_empty_bed(small_study: StudyMaker) -> None:
    folder, truth = small_study(prostatectomy=True, recurrence=False, psa=0.4)
    assert truth.prostate_centroid_lps is None and truth.prostate_bed_centroid_lps is not None
    assert truth.lesion_center_lps is None and truth.lesion_suv_max is None
    pet = _series(folder, "PT")
    assert _value_at(pet, truth.prostate_bed_centroid_lps) * truth.suv_factor < 1.5
    assert pet[0].AdditionalPatientHistory == "PSA 0.4 ng/ml; status post radical prostatectomy"


def test_recurrence_in_the_prostate_bed(small_study: StudyMaker) -> None:
    _, truth = small_study(prostatectomy=True, seed=3)
    assert truth.prostate_bed_centroid_lps is not None and truth.lesion_center_lps is not None
    distance = np.linalg.norm(np.subtract(truth.lesion_center_lps, truth.prostate_bed_centroid_lps))
    assert distance < 15 and 5 <= truth.lesion_radius_mm <= 12
    assert 4 * 0.75 <= truth.lesion_suv_max <= 30 * 1.25


def test_no_recurrence_has_no_hot_spot_in_the_prostate(small_study: StudyMaker) -> None:
    folder, truth = small_study(recurrence=False)
    assert truth.lesion_center_lps is None and truth.recurrence is False
    assert _value_at(_series(folder, "PT"), truth.prostate_centroid_lps, 10) * truth.suv_factor < 4


def test_fdg_tracer_is_written_as_fdg(small_study: StudyMaker) -> None:
    folder, truth = small_study(tracer="FDG")
    radio = _series(folder, "PT")[0].RadiopharmaceuticalInformationSequence[0]
    assert radio.Radiopharmaceutical == "FDG" and truth.tracer == "FDG"
    assert radio.RadiopharmaceuticalCodeSequence[0].CodeMeaning == "Fluorodeoxyglucose F^18^"


def test_gallium_psma_uses_gallium_half_life(small_study: StudyMaker) -> None:
    folder, truth = small_study(tracer="[68Ga]PSMA-11")
    radio = _series(folder, "PT")[0].RadiopharmaceuticalInformationSequence[0]
    assert float(radio.RadionuclideHalfLife) == pytest.approx(4062.6) == truth.half_life_s
    assert radio.RadionuclideCodeSequence[0].CodeMeaning == "^68^Gallium"


def test_psa_and_history_can_be_left_out(small_study: StudyMaker) -> None:
    folder, truth = small_study(psa=None)
    assert _series(folder, "PT")[0].AdditionalPatientHistory == "no prostatectomy" and truth.psa is None
    folder, truth = small_study(write_clinical_history=False)
    assert "AdditionalPatientHistory" not in _series(folder, "CT")[0] and truth.clinical_history is None


def test_explicit_identifiers_are_used(small_study: StudyMaker) -> None:
    folder, truth = small_study(patient_id="PID42", accession="ACC42", study_uid="1.2.3.4.5")
    ds = _series(folder, "PT")[0]
    assert (ds.PatientID, ds.AccessionNumber, ds.StudyInstanceUID) == ("PID42", "ACC42", "1.2.3.4.5")
    assert truth.study_uid == "1.2.3.4.5"


def test_ground_truth_round_trips_through_json(small_study: StudyMaker) -> None:
    folder, truth = small_study(nodal_lesions=2)
    assert GroundTruth.load(folder / "ground_truth.json") == truth
    assert len(truth.nodal_lesions) == 2
    assert all(set(n) >= {"center_lps", "radius_mm", "suv_max"} for n in truth.nodal_lesions)


@pytest.mark.parametrize("bad, message", [
    ({"vendor": "toshiba"}, "vendor"),
    ({"transfer_syntax": "jpeg-ls"}, "transfer syntax"),
    ({"extent_mm": 80.0}, "extent_mm"),
    ({"pet_matrix": 4}, "pet_matrix"),
    ({"nodal_lesions": -1}, "nodal_lesions"),
])
def test_bad_options_are_refused_clearly(tmp_path: Path, bad: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_study(tmp_path, SynthOptions(**bad))  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())
