"""SUVbw factors follow the QIBA rules on real vendor headers, and every untrustworthy header is refused."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from inference.suv import SUVError, SUVFactor, suv_factor, to_suv
from inference.volume import Series

CASES = [
    "SIEMENS",
    "GE_MEDICAL_AND_BQML",
    "PHILIPS_BQML",
    "PHILIPS_CNTS_AND_BQML_SUV",
    "PHILIPS_CNTS_AND_SUV",
    "BQML_AC_DT_lessThan_S_DT_SIEMENS",
    "CPS_AND_BQML_AC_DT_-_S_DT",
    "RADIOPHARM_DATETIME_UNDEFINED",
]
PHILIPS_TAGS = {"SUVScaleFactor": 0x00, "ActivityConcentrationScaleFactor": 0x09}


def _dataset(values: dict) -> Dataset:
    """A PET header from one calculate-suv JSON dump (radiopharmaceutical values go into their sequence)."""
    ds, drug = Dataset(), Dataset()
    for key, value in values.items():
        if key == "PhilipsPETPrivateGroup":
            for name, text in value.items():
                block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
                block.add_new(PHILIPS_TAGS[name], "DS", str(text).strip())
        elif key.startswith("Radio"):
            setattr(drug, key, value)
        else:
            setattr(ds, key, value)
    ds.RadiopharmaceuticalInformationSequence = [drug]
    return ds


def _case(shared_data: Path, name: str) -> list[Dataset]:
    dumps = json.loads((shared_data / "suv-cases" / f"{name}-instances.json").read_text())
    return [_dataset(values) for values in dumps]


@pytest.mark.parametrize("name", CASES)
def test_real_vendor_headers_give_expected_factor(shared_data: Path, name: str) -> None:
    expected = json.loads((shared_data / "suv-cases" / "expected.json").read_text())[name]
    result = suv_factor(_case(shared_data, name))
    assert result.factor == pytest.approx(expected, rel=1e-6)


def test_acquisition_before_series_time_decays_to_earliest_acquisition(shared_data: Path) -> None:
    result = suv_factor(_case(shared_data, "CPS_AND_BQML_AC_DT_-_S_DT"))
    assert result.scan_time == datetime(2020, 12, 17, 13, 3, 48, 234000)
    assert result.injection_time == datetime(2020, 12, 17, 12, 0, 37)
    assert result.decay_seconds == pytest.approx(3791.234)
    assert "using the acquisition time" in result.notes[0]


def test_philips_counts_factor_is_the_private_suv_scale(shared_data: Path) -> None:
    result = suv_factor(_case(shared_data, "PHILIPS_CNTS_AND_SUV"))
    assert result.units == "CNTS"
    np.testing.assert_allclose(to_suv(np.array([1000.0, 2000.0]), result), [0.728, 1.456], rtol=1e-6)


def test_philips_counts_with_activity_scale_only_becomes_bqml_then_suv(shared_data: Path) -> None:
    headers = _case(shared_data, "PHILIPS_CNTS_AND_BQML_SUV")
    for ds in headers:
        del ds[ds.private_block(0x7053, "Philips PET Private Group").get_tag(0x00)]
    bqml = copy.deepcopy(headers)
    for ds in bqml:
        ds.Units = "BQML"
    assert suv_factor(headers).factor == pytest.approx(suv_factor(bqml).factor * 1.602563, rel=1e-9)


def test_real_ge_pet_converts_to_plausible_suv(shared_data: Path) -> None:
    series = Series.scan(sorted((shared_data / "real-pet-ge-sts001" / "PT").iterdir()))
    result = suv_factor(series.headers)
    assert result.decay_seconds == pytest.approx(2711.0)  # 10:35:00 injection, 11:20:11 series
    assert result.factor == pytest.approx(71000 / (3.88777472e8 * 2 ** (-2711 / 6588.0)), rel=1e-9)
    suv = to_suv(series.read(k_range=(0, 267), dtype=np.float32).array, result)
    assert 0.5 < float(np.percentile(suv[suv > 0.05], 50)) < 3  # body soft tissue around SUV 1
    assert 10 < float(suv.max()) < 100  # bladder / hot spots


def test_gml_is_already_suv(shared_data: Path) -> None:
    headers = _case(shared_data, "SIEMENS")
    for ds in headers:
        ds.Units = "GML"
    assert suv_factor(headers).factor == 1.0


def test_admin_decay_correction_uses_no_decay(shared_data: Path) -> None:
    headers = _case(shared_data, "SIEMENS")
    for ds in headers:
        ds.DecayCorrection = "ADMIN"
    result = suv_factor(headers)
    assert result.decay_seconds == 0.0
    assert result.factor == pytest.approx(67 * 1000 / 374000000)


def test_ge_private_scan_time_wins_when_series_time_is_late(shared_data: Path) -> None:
    headers = _case(shared_data, "CPS_AND_BQML_AC_DT_-_S_DT")
    for ds in headers:
        ds.private_block(0x0009, "GEMS_PETD_01", create=True).add_new(0x0D, "DT", "20201217131000.00")
    result = suv_factor(headers)
    assert result.scan_time == datetime(2020, 12, 17, 13, 10)
    assert "GE private scan time" in result.notes[0]


def test_injection_before_midnight_scanned_after(shared_data: Path) -> None:
    headers = _case(shared_data, "RADIOPHARM_DATETIME_UNDEFINED")
    for ds in headers:
        ds.SeriesTime = ds.AcquisitionTime = "001000"
        ds.SeriesDate = ds.AcquisitionDate = "20201218"
        ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = "231000"
    result = suv_factor(headers)
    assert result.injection_time == datetime(2020, 12, 17, 23, 10)
    assert result.decay_seconds == pytest.approx(3600.0)
    assert "midnight" in result.notes[0]


Edit = Callable[[Dataset], None]


def _set(keyword: str, value: object) -> Edit:
    return lambda ds: setattr(ds, keyword, value)


def _drug(keyword: str, value: object) -> Edit:
    def edit(ds: Dataset) -> None:
        item = ds.RadiopharmaceuticalInformationSequence[0]
        if value is None:
            delattr(item, keyword)
        else:
            setattr(item, keyword, value)

    return edit


def _delete(keyword: str) -> Edit:
    return lambda ds: delattr(ds, keyword)


def _both(*edits: Edit) -> Edit:
    def edit(ds: Dataset) -> None:
        for one in edits:
            one(ds)

    return edit


def _coded_f18(ds: Dataset) -> None:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "C-111A1", "SRT", "^18^Fluorine"
    ds.RadiopharmaceuticalInformationSequence[0].RadionuclideCodeSequence = [code]
    ds.RadiopharmaceuticalInformationSequence[0].RadionuclideHalfLife = 109.77


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (_set("CorrectedImage", ["ATTN", "SCAT"]), "CorrectedImage (0028,0051) lacks DECY"),
        (_set("CorrectedImage", ["DECY"]), "lacks ATTN"),
        (_set("Units", "CPS"), "Units (0054,1001) CPS is not supported"),
        (_set("Units", "CNTS"), "Units CNTS without the Philips private SUV Scale Factor"),
        (_set("DecayCorrection", "NONE"), "DecayCorrection NONE"),
        (_set("DecayCorrection", "LATER"), "DecayCorrection (0054,1102) LATER is not START, ADMIN or NONE"),
        (_delete("PatientWeight"), "PatientWeight (0010,1030) is missing"),
        (_set("PatientWeight", 0), "PatientWeight 0 kg is implausible"),
        (_set("PatientWeight", 70000), "PatientWeight 70000 kg is implausible"),
        (_drug("RadionuclideTotalDose", 374), "RadionuclideTotalDose 374 Bq is implausible (given in MBq?)"),
        (_drug("RadionuclideTotalDose", None), "RadionuclideTotalDose (0018,1074) is missing"),
        (_drug("RadionuclideHalfLife", 0), "RadionuclideHalfLife (0018,1075) is missing or not positive"),
        (_coded_f18, "does not match the coded radionuclide F-18"),
        (
            _both(_drug("RadiopharmaceuticalStartDateTime", None), _drug("RadiopharmaceuticalStartTime", None)),
            "injection time unknown",
        ),
        (_drug("RadiopharmaceuticalStartDateTime", "20201218083045"), "negative decay time"),
        (_delete("RadiopharmaceuticalInformationSequence"), "RadiopharmaceuticalInformationSequence (0054,0016)"),
        (_both(_delete("SeriesTime")), "SeriesDate/SeriesTime missing"),
        (_set("SeriesTime", "25x"), "SeriesTime is not a DICOM time"),
    ],
    ids=[
        "no-decy", "no-attn", "units-cps", "cnts-no-scale", "decay-none", "decay-unknown", "no-weight",
        "zero-weight", "weight-in-grams", "dose-in-mbq", "no-dose", "no-half-life", "half-life-minutes",
        "no-injection-time", "injection-after-scan", "no-drug-sequence", "no-series-time", "bad-series-time",
    ],
)
def test_untrustworthy_headers_are_refused(shared_data: Path, edit: Edit, reason: str) -> None:
    headers = _case(shared_data, "SIEMENS")
    for ds in headers:
        edit(ds)
    with pytest.raises(SUVError) as error:
        suv_factor(headers)
    assert reason in str(error.value)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (_set("PatientWeight", 68), "PatientWeight"),
        (_set("Units", "CNTS"), "Units"),
        (_drug("RadionuclideTotalDose", 370000000), "RadionuclideTotalDose"),
        (_set("SeriesTime", "104900"), "SeriesTime"),
    ],
)
def test_headers_inconsistent_across_instances_are_refused(shared_data: Path, edit: Edit, key: str) -> None:
    headers = _case(shared_data, "SIEMENS")
    edit(headers[2])
    with pytest.raises(SUVError, match=f"{key} differs between instances"):
        suv_factor(headers)


def test_empty_series_is_refused() -> None:
    with pytest.raises(SUVError, match="no PET headers"):
        suv_factor([])


def test_to_suv_returns_float32() -> None:
    factor = SUVFactor(0.5, "BQML", "START", None, None, 0.0, None, None)
    out = to_suv(np.array([[2, 4]], dtype=np.int16), factor)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [[1.0, 2.0]])


def test_real_pet_slice_files_give_a_factor(shared_data: Path) -> None:
    headers = [pydicom.dcmread(shared_data / "real-pet-slices" / name, stop_before_pixels=True)
               for name in ("1.dcm", "2.dcm")]
    for ds in headers:
        result = suv_factor([ds])
        assert 1e-5 < result.factor < 1e-2
        assert result.injection_time is not None and result.decay_seconds > 0
