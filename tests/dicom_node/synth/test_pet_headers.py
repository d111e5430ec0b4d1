"""The PET headers carry everything an independent QIBA SUVbw computation needs, per vendor flavour."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from tests.support.dicom import StudyMaker


VENDORS = ["siemens", "ge", "philips"]


def _dt(date: str, time: str) -> datetime:
    return datetime.strptime(date + time.split(".")[0].ljust(6, "0"), "%Y%m%d%H%M%S")


def _read_pet(folder: Path) -> list[Dataset]:
    series = [pydicom.dcmread(p) for p in sorted((folder / "PT").glob("*.dcm"))]
    return sorted(series, key=lambda ds: float(ds.ImagePositionPatient[2]))


def qiba_factor(series: list[Dataset], use_vendor_rules: bool = True) -> float:
    """SUVbw factor (per rescaled pixel value) following QIBA Appendix G, written independently here."""
    first = series[0]
    for keyword in ("Units", "DecayCorrection", "SeriesDate", "SeriesTime", "PatientWeight"):
        assert len({str(getattr(ds, keyword)) for ds in series}) == 1, keyword
    corrected = set(first.CorrectedImage)
    assert {"ATTN", "DECY"} <= corrected
    if first.Units == "CNTS":
        block = first.private_block(0x7053, "Philips PET Private Group")
        return float(block[0x00].value)
    assert first.Units == "BQML"
    assert first.DecayCorrection == "START"
    series_dt = _dt(first.SeriesDate, first.SeriesTime)
    earliest = min(_dt(ds.AcquisitionDate, ds.AcquisitionTime) for ds in series)
    reference = series_dt
    if use_vendor_rules and series_dt > earliest:
        try:
            reference = datetime.strptime(
                str(first.private_block(0x0009, "GEMS_PETD_01")[0x0D].value)[:14], "%Y%m%d%H%M%S")
        except KeyError:
            reference = earliest
    radio = first.RadiopharmaceuticalInformationSequence[0]
    if "RadiopharmaceuticalStartDateTime" in radio:
        injection = datetime.strptime(str(radio.RadiopharmaceuticalStartDateTime)[:14], "%Y%m%d%H%M%S")
    else:
        injection = _dt(first.SeriesDate, radio.RadiopharmaceuticalStartTime)
        if injection > reference:
            injection -= timedelta(days=1)
    elapsed = (reference - injection).total_seconds()
    assert elapsed >= 0
    decayed = float(radio.RadionuclideTotalDose) * 2.0 ** (-elapsed / float(radio.RadionuclideHalfLife))
    return float(first.PatientWeight) * 1000.0 / decayed


def suv_volume(series: list[Dataset], factor: float) -> np.ndarray:
    return np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                     for ds in series]).astype(np.float64) * factor


def _lesion_max(series: list[Dataset], suv: np.ndarray, centre: list[float], radius: float) -> float:
    first = series[0]
    spacing = float(first.PixelSpacing[0])
    x0, y0 = float(first.ImagePositionPatient[0]), float(first.ImagePositionPatient[1])
    zs = np.array([float(ds.ImagePositionPatient[2]) for ds in series])
    xs = x0 + np.arange(int(first.Columns)) * spacing
    ys = y0 + np.arange(int(first.Rows)) * spacing
    reach = max(radius, spacing, float(zs[1] - zs[0]))
    d2 = ((zs - centre[2])[:, None, None] ** 2 + (ys - centre[1])[None, :, None] ** 2
          + (xs - centre[0])[None, None, :] ** 2)
    return float(suv[d2 <= reach**2].max())


@pytest.mark.parametrize("vendor", VENDORS)
def test_lesion_suv_recovered_from_headers_within_one_percent(
        small_study: StudyMaker, vendor: str) -> None:
    folder, truth = small_study(vendor=vendor, nodal_lesions=1)
    series = _read_pet(folder)
    factor = qiba_factor(series)
    suv = suv_volume(series, factor)
    assert truth.lesion_center_lps is not None and truth.lesion_radius_mm is not None
    measured = _lesion_max(series, suv, truth.lesion_center_lps, truth.lesion_radius_mm)
    assert measured == pytest.approx(truth.lesion_suv_max, rel=0.01)
    node = truth.nodal_lesions[0]
    node_max = _lesion_max(series, suv, node["center_lps"], node["radius_mm"])
    assert node_max == pytest.approx(node["suv_max"], rel=0.01)
    # The blur compensation lands the written peak near the designed SUVmax.
    assert measured == pytest.approx(truth.lesion_target_suv_max, rel=0.25)


@pytest.mark.parametrize("vendor", ["siemens", "ge"])
def test_bqml_factor_matches_ground_truth(small_study: StudyMaker,
                                         vendor: str) -> None:
    folder, truth = small_study(vendor=vendor, nodal_lesions=1)
    assert qiba_factor(_read_pet(folder)) == pytest.approx(truth.suv_factor, rel=1e-6)


def test_ge_series_time_is_post_processing_so_private_scan_time_is_needed(
        small_study: StudyMaker) -> None:
    folder, truth = small_study(vendor="ge", nodal_lesions=1)
    series = _read_pet(folder)
    first = series[0]
    earliest = min(_dt(d.AcquisitionDate, d.AcquisitionTime) for d in series)
    assert _dt(first.SeriesDate, first.SeriesTime) > earliest
    scan = first.private_block(0x0009, "GEMS_PETD_01")[0x0D]
    assert scan.VR == "DT" and scan.tag == 0x0009100D
    naive = qiba_factor(series, use_vendor_rules=False)
    assert abs(naive / truth.suv_factor - 1) > 0.05


def test_philips_counts_with_private_scale_factors(small_study: StudyMaker) -> None:
    folder, truth = small_study(vendor="philips", nodal_lesions=1)
    first = _read_pet(folder)[0]
    assert first.Units == "CNTS"
    assert first[0x70530010].value == "Philips PET Private Group"
    suv_scale = float(first[0x70531000].value)
    activity_scale = float(first[0x70531009].value)
    assert suv_scale == pytest.approx(truth.philips_suv_scale_factor)
    # Bq/ml via the activity scale factor, then the standard BQML rules, agree with the SUV scale factor.
    assert suv_scale / activity_scale == pytest.approx(truth.suv_factor, rel=1e-6)


@pytest.mark.parametrize("vendor", VENDORS)
def test_pet_series_headers(small_study: StudyMaker, vendor: str) -> None:
    folder, truth = small_study(vendor=vendor, nodal_lesions=1)
    series = _read_pet(folder)
    n = len(series)
    assert n == truth.n_pet_files == truth.pet_shape[2]
    first = series[0]
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.128"
    assert list(first.SeriesType) == ["WHOLE BODY", "IMAGE"]
    assert first.DecayCorrection == "START"
    assert {int(ds.NumberOfSlices) for ds in series} == {n}
    assert sorted(int(ds.ImageIndex) for ds in series) == list(range(1, n + 1))
    radio = first.RadiopharmaceuticalInformationSequence[0]
    assert radio.Radiopharmaceutical == "PSMA-1007"
    assert float(radio.RadionuclideHalfLife) == pytest.approx(6586.2)
    assert float(radio.RadionuclideTotalDose) == pytest.approx(truth.injected_dose_bq)
    code = radio.RadionuclideCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("C-111A1", "SRT")
    injection = datetime.strptime(radio.RadiopharmaceuticalStartDateTime, "%Y%m%d%H%M%S")
    acquisitions = sorted({_dt(ds.AcquisitionDate, ds.AcquisitionTime) for ds in series})
    assert timedelta(minutes=60) <= acquisitions[0] - injection <= timedelta(minutes=120)
    slopes = {str(ds.RescaleSlope) for ds in series}
    assert len(slopes) > n // 2
    assert all(ds.pixel_array.dtype == np.int16 and ds.PixelRepresentation == 1 for ds in series[:3])
    assert {ds.StudyInstanceUID for ds in series} == {truth.study_uid}
    assert {ds.FrameOfReferenceUID for ds in series} == {truth.frame_of_reference_uid}
    for ds in series[:2]:
        assert "DecayFactor" in ds and "FrameReferenceTime" in ds and int(ds.ActualFrameDuration) > 0


def test_whole_body_pet_has_one_acquisition_time_per_bed(
        small_study: StudyMaker) -> None:
    folder, truth = small_study(extent_mm=600.0, ct_matrix=64, pet_matrix=48)
    series = _read_pet(folder)
    acquisitions = sorted({ds.AcquisitionTime for ds in series})
    assert len(acquisitions) == 3
    first = series[0]
    assert _dt(first.SeriesDate, first.SeriesTime) == _dt(first.AcquisitionDate, acquisitions[0])
    decay = sorted({float(ds.DecayFactor) for ds in series})
    assert len(decay) == 3 and decay[0] > 1.0
