"""Which PET and which CT series of a study are analysed, decided on content, never on descriptions.

Series descriptions differ per site and per technologist; modality, SOP class, attenuation correction, the
radiopharmaceutical, the radionuclide's half-life and the frame of reference do not. Each refusal carries a
sentence an admin can act on ("tracer is FDG, not PSMA").
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.uid import (
    CTImageStorage,
    EnhancedPETImageStorage,
    PositronEmissionTomographyImageStorage,
)

from dicom_node.config import AssemblySettings

PSMA_NAME_FRAGMENTS = (
    "psma",
    "dcfpyl",
    "piflufolastat",
    "pylarify",
    "flotufolastat",
    "posluma",
    "gozetotide",
    "illuccix",
    "locametz",
    "hbedcc",
)
"""Spellings (normalised) that identify a PSMA ligand, to say "not accepted here" rather than "not PSMA"."""

LAYOUT_KEYWORDS = {
    "BitsAllocated": "Bits Allocated",
    "SamplesPerPixel": "Samples per Pixel",
    "Rows": "Rows",
    "Columns": "Columns",
}
"""Header attributes that must be equal on every slice of a series for it to stack into one volume."""

AXIAL_MIN_NORMAL_Z = 0.95
"""|z component| of the slice normal above which a series counts as axial (about 18 degrees of tilt)."""


@dataclass(frozen=True)
class SeriesSummary:
    """What assembly knows about one series, from aggregate queries over its current instances."""

    series_uid: str
    modality: str | None
    sop_class_uid: str | None
    frame_of_reference_uid: str | None
    count: int
    header: dict[str, Any]
    image_index_count: int = 0
    distinct_image_index: int = 0
    min_image_index: int | None = None
    max_image_index: int | None = None
    number_of_slices: int | None = None
    number_of_time_slices: int | None = None
    instance_number_count: int = 0
    distinct_instance_number: int = 0
    min_instance_number: int | None = None
    max_instance_number: int | None = None
    min_position: float | None = None
    max_position: float | None = None
    positions: tuple[float, ...] = ()
    """Sorted slice positions along the normal (loaded for CT series only)."""
    layout: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    """(lowest, highest) value over the series' instances of each LAYOUT_KEYWORDS attribute."""
    lossy: dict[str, int] = field(default_factory=dict)
    """Instances whose pixels are lossy-compressed, counted by reason (`transfer_syntaxes.lossy_reason`)."""

    def lossy_description(self) -> str | None:
        """How much of the series is lossy-compressed and why, or None when none of it is."""
        if not self.lossy:
            return None
        count = sum(self.lossy.values())
        reasons = "; ".join(self.lossy)
        return f"{count} of {self.count} slices lossy-compressed: {reasons}"

    def layout_problem(self) -> str | None:
        """Why the instances' pixel layouts cannot form one volume (from headers alone), or None."""
        label = "PET" if self.modality == "PT" else (self.modality or "series")
        for keyword, what in LAYOUT_KEYWORDS.items():
            low, high = self.layout.get(keyword, (None, None))
            if low is not None and high is not None and low != high:
                return f"{label} series mixes {what} {low} and {high} across its slices; cannot stack them"
        samples = self.layout.get("SamplesPerPixel", (None, None))[1]
        if samples is not None and samples != 1:
            return (
                f"{label} slices have {samples} samples per pixel (colour); only greyscale images are analysed"
            )
        bits = self.layout.get("BitsAllocated", (None, None))[1]
        if bits is not None and bits not in (16, 32):
            return f"{label} slices have Bits Allocated {bits}; CT and PET images need 16 (or 32)"
        return None

    @property
    def z_range(self) -> tuple[float, float] | None:
        if self.min_position is None or self.max_position is None:
            return None
        return (self.min_position, self.max_position)

    @property
    def image_type(self) -> list[str]:
        return [str(v).upper() for v in as_list(self.header.get("ImageType"))]

    @property
    def is_original(self) -> bool:
        return "DERIVED" not in self.image_type[:1]

    @property
    def series_number(self) -> int:
        number = _as_float(self.header.get("SeriesNumber"))
        return int(number) if number is not None else 0

    @property
    def slice_spacing(self) -> float | None:
        """Median step between slice positions when loaded, else the mean step, else Slice Thickness."""
        if len(self.positions) >= 2:
            steps = sorted(b - a for a, b in zip(self.positions, self.positions[1:]))
            return steps[len(steps) // 2]
        if self.min_position is not None and self.max_position is not None and self.count > 1:
            return (self.max_position - self.min_position) / (self.count - 1)
        return _as_float(self.header.get("SliceThickness"))

    def is_axial(self) -> bool:
        orientation = [_as_float(v) for v in as_list(self.header.get("ImageOrientationPatient"))]
        if len(orientation) != 6 or any(v is None for v in orientation):
            return False
        r = orientation[:3]
        c = orientation[3:]
        normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])  # type: ignore[operator]
        length = math.sqrt(sum(v * v for v in normal))  # type: ignore[misc]
        return length > 0 and abs(normal[2]) / length >= AXIAL_MIN_NORMAL_Z  # type: ignore[operator]


@dataclass
class PetVerdict:
    series: SeriesSummary
    refusal: str | None
    tracer: str | None
    flagged: bool = False


@dataclass
class Selection:
    """The chosen PET and CT, or why there are none; flags travel with the job."""

    pet: SeriesSummary | None = None
    ct: SeriesSummary | None = None
    reason: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.pet is not None and self.ct is not None


def as_list(value: Any) -> list[Any]:
    """A DICOM multi-value as stored in the header JSON (list, backslash string or scalar) as a list."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str) and "\\" in value:
        return value.split("\\")
    return [value]


def _as_float(value: Any) -> float | None:
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def tracer_names(header: dict[str, Any]) -> list[str]:
    """The radiopharmaceutical as written (name first, then code meaning), empty strings dropped."""
    names = [
        header.get(k)
        for k in ("RadiopharmaceuticalName", "Radiopharmaceutical", "RadiopharmaceuticalCodeMeaning")
    ]
    return [str(n).strip() for n in names if n is not None and str(n).strip()]


def _matches(names: Sequence[str], tracers: Sequence[str]) -> bool:
    wanted = [_normalise(t) for t in tracers if _normalise(t)]
    return any(w in _normalise(n) for n in names for w in wanted)


def judge_pet(series: SeriesSummary, settings: AssemblySettings) -> PetVerdict:
    """Can this series be analysed as the PSMA PET? Returns the refusal sentence when it cannot."""
    header = series.header
    names = tracer_names(header)
    tracer = names[0] if names else None
    if series.sop_class_uid == EnhancedPETImageStorage:
        return PetVerdict(series, "PET is Enhanced PET (multi-frame), which is not supported", tracer)
    if series.sop_class_uid != PositronEmissionTomographyImageStorage:
        return PetVerdict(
            series, f"PET series has SOP class {series.sop_class_uid}, not PET Image Storage", tracer
        )
    layout = series.layout_problem()
    if layout is not None:
        return PetVerdict(series, layout, tracer)
    lossy = series.lossy_description()
    if lossy is not None:
        return PetVerdict(
            series,
            f"PET is lossy-compressed ({lossy}): SUV is not measured on lossy pixels; "
            "have the PACS send the PET uncompressed or lossless",
            tracer,
        )
    corrections = [str(v).upper() for v in as_list(header.get("CorrectedImage"))]
    if "ATTN" not in corrections:
        return PetVerdict(series, "PET not attenuation-corrected (Corrected Image lacks ATTN)", tracer)
    if not names:
        return PetVerdict(series, "PET names no radiopharmaceutical: tracer unknown", tracer)
    flagged = False
    if not _matches(names, settings.accepted_tracers):
        if _matches(names, settings.flagged_tracers):
            flagged = True
        else:
            joined = " ".join(_normalise(n) for n in names)
            if "fdg" in joined or "fluorodeoxyglucose" in joined:
                refusal = f"tracer is FDG, not PSMA ({tracer!r})"
            elif any(fragment in joined for fragment in PSMA_NAME_FRAGMENTS):
                refusal = (
                    f"tracer is {tracer!r}, a PSMA tracer not accepted here "
                    "(assembly.accepted_tracers / flagged_tracers)"
                )
            else:
                refusal = f"tracer is {tracer!r}, not PSMA"
            return PetVerdict(series, refusal, tracer)
    half_life = _as_float(header.get("RadionuclideHalfLife"))
    low, high = settings.half_life_range_s
    if half_life is None:
        return PetVerdict(series, "PET has no radionuclide half-life", tracer, flagged)
    if not low <= half_life <= high:
        return PetVerdict(
            series,
            f"radionuclide half-life {half_life:g} s is not F-18's (expected {low:g}-{high:g} s)",
            tracer,
            flagged,
        )
    return PetVerdict(series, None, tracer, flagged)


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def coverage(ct: SeriesSummary, pet: SeriesSummary) -> float:
    """Fraction of the PET's z-extent inside the CT's (1.0 = the CT covers the whole PET)."""
    if ct.z_range is None or pet.z_range is None:
        return 0.0
    pet_length = pet.z_range[1] - pet.z_range[0]
    if pet_length <= 0:
        return 1.0 if ct.z_range[0] <= pet.z_range[0] <= ct.z_range[1] else 0.0
    return _overlap(ct.z_range, pet.z_range) / pet_length


def covers(ct: SeriesSummary, pet: SeriesSummary) -> bool:
    """The CT spans the PET's extent, within one slice of either series."""
    if ct.z_range is None or pet.z_range is None:
        return False
    tolerance = max(ct.slice_spacing or 0.0, pet.slice_spacing or 0.0, 1.0)
    return ct.z_range[0] <= pet.z_range[0] + tolerance and ct.z_range[1] >= pet.z_range[1] - tolerance


def _ct_candidates(series: Sequence[SeriesSummary]) -> list[SeriesSummary]:
    return [
        s
        for s in series
        if s.modality == "CT"
        and s.sop_class_uid == CTImageStorage
        and s.count >= 2
        and "LOCALIZER" not in s.image_type
        and s.is_axial()
    ]


def choose_ct(
    series: Sequence[SeriesSummary], pet: SeriesSummary, settings: AssemblySettings
) -> tuple[SeriesSummary | None, str, str | None]:
    """The CT to pair with `pet`: (series, how it was matched, refusal).

    Only a CT in the PET's Frame of Reference demonstrably shares its coordinates (a Spatial Registration
    object is not read). `assembly.allow_different_frame_of_reference` opts in to an axial CT of the same
    study overlapping the PET's z-range instead; the result then says so. Among several: one that covers
    the PET, not lossy-compressed, ORIGINAL over DERIVED, the thinnest slices, then the widest coverage. A
    CT whose slices have inconsistent pixel layouts is never chosen.
    """
    cts = [s for s in series if s.modality == "CT"]
    if not cts:
        return None, "", "no CT in the study"
    candidates = _ct_candidates(series)
    if not candidates:
        return None, "", "no axial CT image series in the study (only localizers, enhanced or non-axial CT)"
    matched = [
        s
        for s in candidates
        if pet.frame_of_reference_uid and s.frame_of_reference_uid == pet.frame_of_reference_uid
    ]
    how = "frame_of_reference"
    if not matched:
        if not settings.allow_different_frame_of_reference:
            return (
                None,
                "",
                (
                    f"no CT shares the PET's Frame of Reference ({len(candidates)} axial CT series in other "
                    "frames): PET and CT are not shown to share coordinates, so they are not analysed "
                    "together (registration objects are not read; "
                    "assembly.allow_different_frame_of_reference opts in)"
                ),
            )
        matched = [s for s in candidates if coverage(s, pet) > 0]
        how = "z_overlap"
    if not matched:
        return (
            None,
            "",
            (
                "no CT sharing the PET's frame of reference "
                "(and no CT of the study overlapping the PET's z-range)"
            ),
        )
    usable = [s for s in matched if s.layout_problem() is None]
    if not usable:
        return None, "", str(matched[0].layout_problem())
    best = max(
        usable,
        key=lambda s: (covers(s, pet), not s.lossy, s.is_original, -(s.slice_spacing or 1e9),
                       coverage(s, pet), s.count),
    )
    return best, how, None


def select_series(series: Sequence[SeriesSummary], settings: AssemblySettings) -> Selection:
    """Pick the PET (acceptable, best ranked) and its CT; or say why the study cannot be analysed."""
    pets = [s for s in series if s.modality == "PT"]
    if not pets:
        return Selection(reason="no PET series in the study")
    verdicts = [judge_pet(s, settings) for s in pets]
    acceptable = [v for v in verdicts if v.refusal is None]
    if not acceptable:
        reasons = list(dict.fromkeys(v.refusal for v in verdicts if v.refusal))
        return Selection(reason="; ".join(reasons), flags={"pet_refusals": reasons})
    chosen = max(
        acceptable,
        key=lambda v: (not v.flagged, v.series.is_original, v.series.count, v.series.series_number),
    )
    pet = chosen.series
    flags: dict[str, Any] = {"tracer": chosen.tracer, "tracer_flagged": chosen.flagged}
    if len(acceptable) > 1:
        flags["pet_candidates"] = len(acceptable)
    ct, how, refusal = choose_ct(series, pet, settings)
    if ct is None:
        return Selection(pet=pet, reason=refusal, flags=flags)
    flags.update(ct_match=how, ct_coverage=round(coverage(ct, pet), 3))
    lossy_ct = ct.lossy_description()
    if lossy_ct is not None:
        flags["ct_lossy"] = lossy_ct  # analysed: the CT only places the region and the organs
    return Selection(pet=pet, ct=ct, flags=flags)
