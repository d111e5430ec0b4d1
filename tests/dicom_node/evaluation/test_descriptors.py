"""Input descriptors of a result, read from real synthetic PET headers (as the analysis holds them): scanner,
acquisition, patient values with their provenance, and the model's call."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pydicom
import pytest

from dicom_node.evaluation.descriptors import describe
from tests.dicom_node.report.synthetic import make_analysis
from tests.support.dicom import StudyMaker


def _pet_headers(folder: Path, series_uid: str) -> list[pydicom.Dataset]:
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(folder.glob("*/*.dcm"))]
    return [h for h in headers if h.SeriesInstanceUID == series_uid]


def test_descriptors_come_from_the_pet_headers_and_the_analysis(small_study: StudyMaker) -> None:
    folder, truth = small_study(seed=11)
    analysis = make_analysis(probability=0.83)
    described = describe(analysis, _pet_headers(folder, truth.pet_series_uid), "shadow")
    uptake = (dt.datetime.fromisoformat(truth.scan_start_datetime)
              - dt.datetime.fromisoformat(truth.injection_datetime)).total_seconds() / 60
    assert (described.manufacturer, described.scanner_model, described.software_versions) == (
        "SIEMENS", "Biograph Vision 600", "VG80B")
    assert described.scanner == "SIEMENS Biograph Vision 600"
    assert described.reconstruction_method == "PSF+TOF 4i5s" and "PSMA-1007" in (described.tracer or "")
    assert described.pet_voxel_mm == pytest.approx(truth.pet_spacing_mm, abs=1e-3)
    assert described.weight_kg == truth.patient_weight_kg
    assert described.injected_activity_mbq == pytest.approx(truth.injected_dose_bq / 1e6)
    assert described.uptake_time_min == pytest.approx(uptake, abs=0.02)
    assert (described.psa_ng_ml, described.psa_source) == (4.2, "tags")
    assert (described.prostatectomy, described.prostatectomy_source) == (False, "registered")
    assert (described.model_id, described.threshold, described.probability, described.positive) == (
        "D", 0.5, 0.83, True)
    assert described.results_mode == "shadow" and described.envelope_violations == []


def test_without_a_classifier_there_is_no_call_and_unknown_times_stay_unknown(small_study: StudyMaker) -> None:
    folder, truth = small_study(seed=12, vendor="philips")  # CNTS with the SUV scale factor: no times used
    described = describe(make_analysis(classifier_run=False), _pet_headers(folder, truth.pet_series_uid), "live")
    assert (described.probability, described.positive, described.model_id) == (None, None, None)
    assert described.uptake_time_min is None
    assert described.manufacturer == "Philips Medical Systems"


def test_a_header_without_geometry_or_drug_gives_none_rather_than_an_error() -> None:
    header = pydicom.Dataset()
    header.Manufacturer = "ACME"
    header.SoftwareVersions = ["1.0", "2.1"]
    described = describe(make_analysis(), [header], "live")
    assert described.software_versions == "1.0\\2.1"
    assert (described.pet_voxel_mm, described.tracer, described.injected_activity_mbq,
            described.uptake_time_min, described.weight_kg) == (None, None, None, None, None)
