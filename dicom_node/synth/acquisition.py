"""When and how the synthetic patient was injected and scanned: the numbers the PET headers must carry.

The SUVbw factor follows the QIBA rules (decay of the injected dose from injection to the scan start, since
the images are decay-corrected to START). Values are rounded to what the headers can hold *before* the
factor is computed, so a reader of the headers recovers exactly the factor used to write the pixels.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import numpy as np


@dataclass(frozen=True)
class Radionuclide:
    name: str
    half_life_s: float
    code_value: str
    code_scheme: str
    code_meaning: str


FLUORINE_18 = Radionuclide("F-18", 6586.2, "C-111A1", "SRT", "^18^Fluorine")
GALLIUM_68 = Radionuclide("Ga-68", 4062.6, "C-131A3", "SRT", "^68^Gallium")


def radionuclide_for(tracer: str) -> Radionuclide:
    """Gallium-labelled PSMA ligands (PSMA-11, gozetotide, PSMA I&T) decay faster than F-18 ones."""
    compact = re.sub(r"[^A-Z0-9]", "", tracer.upper())
    if any(key in compact for key in ("68GA", "GA68", "GALLIUM", "PSMA11", "GOZETOTIDE")):
        return GALLIUM_68
    return FLUORINE_18


def tracer_family(tracer: str) -> str:
    """'fdg' for glucose-analogue tracers (different biodistribution), else 'psma'."""
    upper = tracer.upper()
    return "fdg" if "FDG" in upper or "FLUORODEOXYGLUCOSE" in upper else "psma"


@dataclass(frozen=True)
class Acquisition:
    injection: datetime
    ct_time: datetime
    scan_start: datetime
    bed_seconds: int
    bed_gap_seconds: int
    n_beds: int
    weight_kg: float
    dose_bq: float
    nuclide: Radionuclide

    @property
    def study_time(self) -> datetime:
        return self.ct_time - timedelta(minutes=3)

    def bed_start(self, bed: int) -> datetime:
        return self.scan_start + timedelta(seconds=bed * (self.bed_seconds + self.bed_gap_seconds))

    @property
    def scan_end(self) -> datetime:
        return self.bed_start(self.n_beds - 1) + timedelta(seconds=self.bed_seconds)

    @property
    def uptake_seconds(self) -> float:
        return (self.scan_start - self.injection).total_seconds()

    @property
    def suv_factor(self) -> float:
        """SUVbw = Bq/ml x factor (weight in g over the dose decayed to the scan start)."""
        decayed = self.dose_bq * 2.0 ** (-self.uptake_seconds / self.nuclide.half_life_s)
        return self.weight_kg * 1000.0 / decayed

    def decay_factor(self, bed: int) -> float:
        """DICOM Decay Factor of a bed: back to the scan start, including decay during the frame."""
        lam = math.log(2.0) / self.nuclide.half_life_s
        offset = (self.bed_start(bed) - self.scan_start).total_seconds()
        during = lam * self.bed_seconds / (1.0 - math.exp(-lam * self.bed_seconds))
        return math.exp(lam * offset) * during

    def frame_reference_ms(self, bed: int) -> float:
        """Time from the scan start to the moment the frame's mean activity occurred."""
        lam = math.log(2.0) / self.nuclide.half_life_s
        d = float(self.bed_seconds)
        mean_offset = -math.log((1.0 - math.exp(-lam * d)) / (lam * d)) / lam
        return ((self.bed_start(bed) - self.scan_start).total_seconds() + mean_offset) * 1000.0


def plan_acquisition(rng: np.random.Generator, seed: int, tracer: str, extent_mm: float) -> Acquisition:
    """Injection in the morning, PET 60-120 min later, beds of ~20 cm from the thighs upwards."""
    day = date(2024, 1, 2) + timedelta(days=(seed * 7) % 360)
    injection = datetime(day.year, day.month, day.day, 7, 30) + timedelta(
        minutes=(seed * 13) % 240, seconds=int(rng.integers(0, 60)))
    uptake = timedelta(seconds=int(rng.integers(60 * 60, 120 * 60)))
    scan_start = injection + uptake
    weight = round(float(rng.uniform(60.0, 110.0)), 1)
    dose = round(float(rng.uniform(3.0, 4.0)) * weight * 1e6, -4)
    n_beds = max(1, math.ceil(extent_mm / 200.0))
    return Acquisition(
        injection=injection,
        ct_time=scan_start - timedelta(minutes=4),
        scan_start=scan_start,
        bed_seconds=180,
        bed_gap_seconds=8,
        n_beds=n_beds,
        weight_kg=weight,
        dose_bq=dose,
        nuclide=radionuclide_for(tracer),
    )
