"""What one result was made under: scanner, acquisition, patient values and model, read from the PET headers
the analysis already holds (no file is read again).

These are what local performance is filtered and grouped by, what drift monitoring watches, and what the
validated envelope is checked against; one row per result (db.models.ResultDescriptors). A header that is
missing or unreadable gives None for its descriptor: describing never fails an analysis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from inference.result import AnalysisResult, ClinicalValue
from inference.suv import SUVError, suv_factor

ResultsMode = Literal["live", "shadow"]
PROVENANCE = {"given": "registered", "tag": "tags", "imputed": "imputed", "inferred": "inferred"}
"""The analysis's source of a clinical value, in the words the descriptors (and the evaluation) use."""


@dataclass(frozen=True)
class Descriptors:
    """The columns of a ResultDescriptors row (without its keys)."""

    manufacturer: str | None
    scanner_model: str | None
    software_versions: str | None
    reconstruction_method: str | None
    convolution_kernel: str | None
    tracer: str | None
    pet_voxel_mm: list[float] | None
    """Row spacing, column spacing and slice spacing of the PET grid (mm)."""
    pet_slice_thickness_mm: float | None
    injected_activity_mbq: float | None
    uptake_time_min: float | None
    weight_kg: float | None
    psa_ng_ml: float | None
    psa_source: str | None
    prostatectomy: bool | None
    prostatectomy_source: str | None
    model_id: str | None
    weights_sha256: str | None
    threshold: float | None
    probability: float | None
    positive: bool | None
    results_mode: ResultsMode
    envelope_violations: list[str] = field(default_factory=list)

    def columns(self) -> dict[str, Any]:
        """Keyword arguments for db.models.ResultDescriptors."""
        return dataclasses.asdict(self)

    @property
    def scanner(self) -> str | None:
        """Manufacturer and model as one name, e.g. "SIEMENS Biograph mCT" (what envelopes and alarms name)."""
        parts = [p for p in (self.manufacturer, self.scanner_model) if p]
        return " ".join(parts) or None


def _text(header: Dataset, keyword: str, limit: int) -> str | None:
    """A header's text, multiple values joined with a backslash as DICOM writes them; None when empty."""
    value = header.get(keyword)
    if value is None:
        return None
    values = value if isinstance(value, (list, tuple, MultiValue)) else [value]
    joined = "\\".join(str(v).strip() for v in values if str(v).strip())
    return joined[:limit] or None


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _slice_spacing(headers: Sequence[Dataset]) -> float | None:
    """Median step between slice positions along the slice normal (what the stack really has)."""
    try:
        orientation = np.array([float(v) for v in headers[0].ImageOrientationPatient])
        normal = np.cross(orientation[:3], orientation[3:])
        positions = sorted({round(float(np.dot(normal, [float(v) for v in h.ImagePositionPatient])), 4)
                            for h in headers})
    except (AttributeError, TypeError, ValueError, IndexError):
        positions = []
    if len(positions) >= 2:
        return round(float(np.median(np.diff(positions))), 4)
    return _number(headers[0].get("SpacingBetweenSlices")) if headers else None


def _voxel(headers: Sequence[Dataset]) -> list[float] | None:
    spacing = headers[0].get("PixelSpacing")
    step = _slice_spacing(headers)
    try:
        row, column = (float(v) for v in spacing)
    except (TypeError, ValueError):
        return None
    return [round(row, 4), round(column, 4), step] if step is not None else None


def _tracer(header: Dataset) -> str | None:
    drugs = header.get("RadiopharmaceuticalInformationSequence") or []
    if not drugs:
        return None
    drug = drugs[0]
    name = str(drug.get("Radiopharmaceutical", "") or "").strip()
    if not name:
        codes = drug.get("RadiopharmaceuticalCodeSequence") or []
        name = str(codes[0].get("CodeMeaning", "") or "").strip() if codes else ""
    return name[:128] or None


def _activity_mbq(header: Dataset) -> float | None:
    drugs = header.get("RadiopharmaceuticalInformationSequence") or []
    dose = _number(drugs[0].get("RadionuclideTotalDose")) if drugs else None
    return None if dose is None else round(dose / 1e6, 3)


def _uptake_min(headers: Sequence[Dataset]) -> float | None:
    """Injection to scan start, by the same rules the SUV uses (None when the headers cannot say)."""
    try:
        factor = suv_factor(list(headers))
    except (SUVError, AttributeError, TypeError, ValueError):
        return None
    if factor.scan_time is None or factor.injection_time is None:
        return None
    return round((factor.scan_time - factor.injection_time).total_seconds() / 60.0, 2)


def _clinical(value: ClinicalValue) -> tuple[Any, str | None]:
    return value.value, PROVENANCE.get(value.source, value.source)


def describe(analysis: AnalysisResult, pet_headers: Sequence[Dataset], results_mode: ResultsMode) -> Descriptors:
    """The descriptors of one analysis; `pet_headers` are the analysed PET instances' headers (no pixels)."""
    header = pet_headers[0]
    psa, psa_source = _clinical(analysis.psa)
    operated, operated_source = _clinical(analysis.prostatectomy)
    probability = analysis.probability if analysis.classifier_run else None
    return Descriptors(
        manufacturer=_text(header, "Manufacturer", 64),
        scanner_model=_text(header, "ManufacturerModelName", 64),
        software_versions=_text(header, "SoftwareVersions", 128),
        reconstruction_method=_text(header, "ReconstructionMethod", 128),
        convolution_kernel=_text(header, "ConvolutionKernel", 128),
        tracer=_tracer(header),
        pet_voxel_mm=_voxel(pet_headers),
        pet_slice_thickness_mm=_number(header.get("SliceThickness")),
        injected_activity_mbq=_activity_mbq(header),
        uptake_time_min=_uptake_min(pet_headers),
        weight_kg=_number(header.get("PatientWeight")),
        psa_ng_ml=None if psa is None else float(psa),
        psa_source=psa_source,
        prostatectomy=None if operated is None else bool(operated),
        prostatectomy_source=operated_source,
        model_id=analysis.model_id,
        weights_sha256=analysis.weights_sha256,
        threshold=analysis.threshold,
        probability=analysis.probability,
        positive=None if probability is None else probability >= analysis.threshold,
        results_mode=results_mode,
    )
