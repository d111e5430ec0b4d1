"""Body-weight SUV from PET headers, following the vendor-neutral QIBA rules (Profile Appendix G).

The published models B-D see PET in SUVbw; a wrong factor silently shifts every fixed-range input, so every
header the rule depends on is checked and any doubt is refused with a specific reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import numpy as np
import pydicom
from pydicom.valuerep import DA, DT, TM

F18_HALF_LIFE_S = 6586.2
GA68_HALF_LIFE_S = 4063.0
HALF_LIFE_MATCH = 0.05
"""Relative tolerance when a coded radionuclide's half-life is checked against its known value."""
F18_CODES = {"C-111A1", "77004003", "^18^Fluorine", "18F", "F-18", "Fluorine-18"}
DOSE_RANGE_BQ = (1e6, 5e10)
"""Plausible injected activity: below is a dose given in MBq (or none), above is beyond any human dose."""
WEIGHT_RANGE_KG = (1.0, 400.0)
PHILIPS_CREATOR = "Philips PET Private Group"
GE_CREATOR = "GEMS_PETD_01"


class SUVError(ValueError):
    """The PET headers do not allow a trustworthy SUVbw; the message says which header and why."""


@dataclass
class SUVFactor:
    """Multiply rescaled pixel values by `factor` to get SUVbw (g/ml).

    For units CNTS (Philips) `factor` already includes the private scale factor, so it turns counts into
    SUV directly; for GML it is 1. Times are naive local DICOM times.
    """

    factor: float
    units: str
    decay_correction: str
    scan_time: datetime | None
    injection_time: datetime | None
    decay_seconds: float
    decayed_dose_bq: float | None
    weight_kg: float | None
    notes: list[str] = field(default_factory=list)


def to_suv(values: np.ndarray, factor: SUVFactor) -> np.ndarray:
    """Rescaled PET values (Bq/ml for BQML, counts for CNTS, SUV for GML) to SUVbw as float32."""
    return (np.asarray(values, dtype=np.float32) * np.float32(factor.factor)).astype(np.float32)


def _radiopharmaceutical(header: pydicom.Dataset) -> pydicom.Dataset:
    sequence = getattr(header, "RadiopharmaceuticalInformationSequence", None)
    if not sequence:
        raise SUVError("RadiopharmaceuticalInformationSequence (0054,0016) is missing: no dose or injection time")
    return sequence[0]


def _signature(header: pydicom.Dataset) -> dict[str, object]:
    """The per-series values every instance must share."""
    drug = getattr(header, "RadiopharmaceuticalInformationSequence", None)
    item = drug[0] if drug else pydicom.Dataset()
    return {
        "Units": str(getattr(header, "Units", "")),
        "CorrectedImage": tuple(sorted(str(v) for v in _multi(getattr(header, "CorrectedImage", None)))),
        "DecayCorrection": str(getattr(header, "DecayCorrection", "")),
        "RadionuclideTotalDose": _text(getattr(item, "RadionuclideTotalDose", None)),
        "RadionuclideHalfLife": _text(getattr(item, "RadionuclideHalfLife", None)),
        "RadiopharmaceuticalStartTime": _text(getattr(item, "RadiopharmaceuticalStartTime", None)),
        "RadiopharmaceuticalStartDateTime": _text(getattr(item, "RadiopharmaceuticalStartDateTime", None)),
        "PatientWeight": _text(getattr(header, "PatientWeight", None)),
        "SeriesDate": _text(getattr(header, "SeriesDate", None)),
        "SeriesTime": _text(getattr(header, "SeriesTime", None)),
    }


def _multi(value: object) -> list[object]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return list(value)
    return [value]


def _text(value: object) -> str | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        return repr(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value).strip()


def _number(value: object, what: str) -> float | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise SUVError(f"{what} is not a number: {value!r}") from exc
    if not math.isfinite(number):
        raise SUVError(f"{what} is not finite: {value!r}")
    return number


def _date(value: object, what: str) -> date | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        parsed = DA(str(value).strip())
    except ValueError as exc:
        raise SUVError(f"{what} is not a DICOM date: {value!r}") from exc
    return date(parsed.year, parsed.month, parsed.day) if parsed is not None else None


def _time(value: object, what: str) -> time | None:
    if value is None or str(value).strip() == "":
        return None
    try:
        parsed = TM(str(value).strip())
    except ValueError as exc:
        raise SUVError(f"{what} is not a DICOM time: {value!r}") from exc
    return time(parsed.hour, parsed.minute, parsed.second, parsed.microsecond) if parsed is not None else None


def _datetime(value: object, what: str) -> datetime | None:
    if value is None or str(value).strip() == "":
        return None
    text = str(value).strip()
    try:
        parsed = DT(text)
    except ValueError as exc:
        raise SUVError(f"{what} is not a DICOM date-time: {value!r}") from exc
    if parsed is None or len(text) < 12:  # needs at least YYYYMMDDHHMM to be a time of day
        raise SUVError(f"{what} has no time of day: {value!r}")
    return parsed.replace(tzinfo=None)


def _combine(day: date | None, clock: time | None) -> datetime | None:
    return datetime.combine(day, clock) if day is not None and clock is not None else None


def _private(header: pydicom.Dataset, group: int, creator: str, offset: int) -> object | None:
    try:
        block = header.private_block(group, creator)
    except KeyError:
        return None
    tag = block.get_tag(offset)
    return header[tag].value if tag in header else None


def _check_consistent(headers: Sequence[pydicom.Dataset]) -> None:
    first = _signature(headers[0])
    for index, header in enumerate(headers[1:], start=1):
        other = _signature(header)
        for key, value in first.items():
            if other[key] != value:
                raise SUVError(
                    f"{key} differs between instances of the series (instance 0: {value}, instance {index}: "
                    f"{other[key]}); cannot use one SUV factor"
                )


def _scan_time(headers: Sequence[pydicom.Dataset], notes: list[str]) -> datetime:
    """Series Date/Time, unless acquisition started earlier (post-processed series): then GE's or the earliest."""
    first = headers[0]
    series = _combine(_date(first.get("SeriesDate"), "SeriesDate"), _time(first.get("SeriesTime"), "SeriesTime"))
    if series is None:
        raise SUVError("SeriesDate/SeriesTime missing: no reference time for decay correction")
    acquisitions = [
        moment
        for header in headers
        if (
            moment := _combine(
                _date(header.get("AcquisitionDate"), "AcquisitionDate"),
                _time(header.get("AcquisitionTime"), "AcquisitionTime"),
            )
        )
        is not None
    ]
    earliest = min(acquisitions) if acquisitions else None
    if earliest is None or series <= earliest:
        return series
    ge_value = _private(first, 0x0009, GE_CREATOR, 0x0D)
    ge_time = _datetime(ge_value, "GE private scan time (0009,100D)")
    if ge_time is not None:
        notes.append(f"series time {series} is after acquisition {earliest}: using GE private scan time {ge_time}")
        return ge_time
    notes.append(f"series time {series} is after the earliest acquisition {earliest}: using the acquisition time")
    return earliest


def _injection_time(drug: pydicom.Dataset, series_day: date | None, scan: datetime, notes: list[str]) -> datetime:
    start = _datetime(drug.get("RadiopharmaceuticalStartDateTime"), "RadiopharmaceuticalStartDateTime")
    if start is not None:
        return start
    clock = _time(drug.get("RadiopharmaceuticalStartTime"), "RadiopharmaceuticalStartTime")
    if clock is None:
        raise SUVError(
            "injection time unknown: neither RadiopharmaceuticalStartDateTime (0018,1078) nor "
            "RadiopharmaceuticalStartTime (0018,1072) is present"
        )
    day = series_day or scan.date()
    injection = datetime.combine(day, clock)
    if injection > scan:
        injection -= timedelta(days=1)
        notes.append("injection time is after the scan on the series date: injected the day before (midnight)")
    return injection


def _check_half_life(drug: pydicom.Dataset, half_life: float) -> None:
    codes = getattr(drug, "RadionuclideCodeSequence", None) or []
    names = {str(getattr(item, key, "")).strip() for item in codes for key in ("CodeValue", "CodeMeaning")}
    if names & F18_CODES and abs(half_life / F18_HALF_LIFE_S - 1) > HALF_LIFE_MATCH:
        raise SUVError(
            f"RadionuclideHalfLife {half_life:g} s does not match the coded radionuclide F-18 "
            f"({F18_HALF_LIFE_S:g} s): given in other units?"
        )


def _decay_corrected_dose_bq(drug: pydicom.Dataset) -> tuple[float, float]:
    dose = _number(drug.get("RadionuclideTotalDose"), "RadionuclideTotalDose")
    if dose is None:
        raise SUVError("RadionuclideTotalDose (0018,1074) is missing")
    if not DOSE_RANGE_BQ[0] <= dose <= DOSE_RANGE_BQ[1]:
        hint = " (given in MBq?)" if 0 < dose < DOSE_RANGE_BQ[0] else ""
        raise SUVError(
            f"RadionuclideTotalDose {dose:g} Bq is implausible{hint}: expected "
            f"{DOSE_RANGE_BQ[0]:g}..{DOSE_RANGE_BQ[1]:g} Bq"
        )
    half_life = _number(drug.get("RadionuclideHalfLife"), "RadionuclideHalfLife")
    if half_life is None or half_life <= 0:
        raise SUVError(f"RadionuclideHalfLife (0018,1075) is missing or not positive ({half_life})")
    _check_half_life(drug, half_life)
    return dose, half_life


def _weight_kg(header: pydicom.Dataset) -> float:
    weight = _number(header.get("PatientWeight"), "PatientWeight")
    if weight is None:
        raise SUVError("PatientWeight (0010,1030) is missing: SUVbw needs the body weight")
    if not WEIGHT_RANGE_KG[0] <= weight <= WEIGHT_RANGE_KG[1]:
        raise SUVError(
            f"PatientWeight {weight:g} kg is implausible: expected {WEIGHT_RANGE_KG[0]:g}..{WEIGHT_RANGE_KG[1]:g} kg"
        )
    return weight


def _philips_scale(header: pydicom.Dataset) -> tuple[float | None, float | None]:
    suv_scale = _number(_private(header, 0x7053, PHILIPS_CREATOR, 0x00), "Philips SUV Scale Factor (7053,1000)")
    activity_scale = _number(
        _private(header, 0x7053, PHILIPS_CREATOR, 0x09), "Philips Activity Concentration Scale Factor (7053,1009)"
    )
    return (suv_scale if suv_scale else None), (activity_scale if activity_scale else None)


def suv_factor(headers: Sequence[pydicom.Dataset]) -> SUVFactor:
    """The one SUVbw factor of a PET series, or SUVError saying which header makes it untrustworthy."""
    if not headers:
        raise SUVError("no PET headers given")
    _check_consistent(headers)
    first = headers[0]
    units = str(getattr(first, "Units", "")).strip().upper()
    decay = str(getattr(first, "DecayCorrection", "")).strip().upper()
    corrected = {str(v).strip().upper() for v in _multi(getattr(first, "CorrectedImage", None))}
    missing = [flag for flag in ("ATTN", "DECY") if flag not in corrected]
    if missing:
        raise SUVError(
            f"CorrectedImage (0028,0051) lacks {' and '.join(missing)} ({sorted(corrected) or 'empty'}): "
            "only attenuation- and decay-corrected PET gives meaningful SUV"
        )
    notes: list[str] = []

    if units == "GML":
        notes.append("Units GML: pixel values are already SUVbw")
        return SUVFactor(1.0, units, decay, None, None, 0.0, None, None, notes)
    if units not in ("BQML", "CNTS"):
        raise SUVError(f"Units (0054,1001) {units or 'missing'} is not supported (BQML, CNTS with Philips scale, GML)")

    scale_to_suv = 1.0
    if units == "CNTS":
        suv_scale, activity_scale = _philips_scale(first)
        if suv_scale is not None:
            notes.append(f"Units CNTS: Philips SUV Scale Factor (7053,1000) {suv_scale:g} used as the factor")
            return SUVFactor(suv_scale, units, decay, None, None, 0.0, None, None, notes)
        if activity_scale is None:
            raise SUVError(
                "Units CNTS without the Philips private SUV Scale Factor (7053,1000) or Activity Concentration "
                "Scale Factor (7053,1009): counts cannot be converted to Bq/ml"
            )
        scale_to_suv = activity_scale
        notes.append(f"Units CNTS: Philips Activity Concentration Scale Factor {activity_scale:g} gives Bq/ml")

    drug = _radiopharmaceutical(first)
    weight = _weight_kg(first)
    dose, half_life = _decay_corrected_dose_bq(drug)
    scan = _scan_time(headers, notes)
    series_day = _date(first.get("SeriesDate"), "SeriesDate")
    if decay == "START":
        injection: datetime | None = _injection_time(drug, series_day, scan, notes)
        assert injection is not None
        seconds = (scan - injection).total_seconds()
        if seconds < 0:
            raise SUVError(f"injection ({injection}) is after the scan reference time ({scan}): negative decay time")
    elif decay == "ADMIN":
        injection, seconds = None, 0.0
        notes.append("DecayCorrection ADMIN: images are already decay-corrected to the injection time")
    elif decay == "NONE":
        raise SUVError("DecayCorrection NONE: per-frame decay correction is not supported")
    else:
        raise SUVError(f"DecayCorrection (0054,1102) {decay or 'missing'} is not START, ADMIN or NONE")

    decayed = dose * 2.0 ** (-seconds / half_life)
    factor = weight * 1000.0 / decayed * scale_to_suv
    return SUVFactor(factor, units, decay, scan, injection, seconds, decayed, weight, notes)
