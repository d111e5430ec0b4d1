"""Every PSMA-avid focus of the prostate / prostate-bed region, in PROMISE V2 terms (docs/findings.md).

Foci are local maxima of the SUV inside the analysed region (bladder excluded), taken hottest first:

- a maximum is a focus candidate when its SUVmax reaches `min_suv` and `min_contrast` times its local
  background (median SUV of the region in a shell 15-25 mm around it, hotter foci left out);
- it is merged into a hotter focus (not counted) when it lies inside that focus's isocontour, or when the
  SUV between the two never drops below `saddle_fraction` of its own SUVmax (a shoulder, not a peak);
- its isocontour is the connected set at 41 % of its SUVmax, within the region and a search sphere around
  the maximum, without voxels of hotter foci; when 41 % of SUVmax does not clear the local background by
  `min_contrast`, the level is raised to background + 50 % of (SUVmax - background), because a fixed 41 %
  level then spreads through the surrounding PSMA-avid tissue.

SUVpeak is the highest mean SUV of a 1 cm³ sphere whose centre lies in the isocontour (PERCIST-style).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.quantify import AnalysedRegion
from inference.reference_organs import ReferenceScorer
from inference.result import BladderRelation, Findings, Focus, Quantification
from inference.volume import Volume

PEAK_SPHERE_RADIUS_MM = (3.0 / (4.0 * math.pi) * 1000.0) ** (1.0 / 3.0)
"""Radius of a 1 cm³ sphere (6.20 mm)."""
PEAK_MIN_VOXELS = 7
"""Fewest voxel centres the 1 cm³ sphere must hold for SUVpeak to mean more than SUVmax (else None)."""


@dataclass(frozen=True)
class FindingsOptions:
    """Thresholds of focus detection and of the bladder relation (documented in docs/findings.md)."""

    isocontour_fraction: float = 0.41
    min_suv: float = 4.0
    min_contrast: float = 1.5
    saddle_fraction: float = 0.7
    background_shell_mm: tuple[float, float] = (15.0, 25.0)
    background_percentile: float = 50.0
    adapted_fraction: float = 0.5
    search_radius_mm: float = 30.0
    adjacent_mm: float = 10.0
    max_foci: int = 20


@dataclass
class DetectedFocus:
    """A focus as detection leaves it: its maximum, isocontour level and mask (on the PET crop grid)."""

    index: tuple[int, int, int]
    suv_max: float
    level: float
    mask: np.ndarray
    note: str


def _ball_offsets(spacing: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    reach = [int(math.floor(radius_mm / s)) for s in spacing]
    grid = np.indices([2 * r + 1 for r in reach]).reshape(3, -1).T - np.array(reach)
    return grid[np.linalg.norm(grid * np.array(spacing), axis=1) <= radius_mm + 1e-6]


def _distance_mm(
    shape: tuple[int, ...], spacing: tuple[float, float, float], index: tuple[int, int, int]
) -> np.ndarray:
    axes = [(np.arange(n) - i) * s for n, i, s in zip(shape, index, spacing)]
    return np.sqrt(axes[0][:, None, None] ** 2 + axes[1][None, :, None] ** 2 + axes[2][None, None, :] ** 2)


def _component(mask: np.ndarray, index: tuple[int, int, int]) -> np.ndarray:
    if not mask[index]:
        return np.zeros_like(mask)
    labels, _ = ndimage.label(mask)
    return labels == labels[index]


def suv_peak(suv: np.ndarray, focus: np.ndarray, spacing: tuple[float, float, float]) -> float | None:
    """Highest mean of a 1 cm³ sphere centred in the focus, wholly inside the image; None if it cannot fit."""
    offsets = _ball_offsets(spacing, PEAK_SPHERE_RADIUS_MM)
    if len(offsets) < PEAK_MIN_VOXELS or not focus.any():
        return None
    reach = np.abs(offsets).max(axis=0)
    kernel = np.zeros(tuple(2 * reach + 1), dtype=np.float64)
    kernel[tuple((offsets + reach).T)] = 1.0
    points = np.argwhere(focus)
    low = np.maximum(points.min(axis=0) - reach, 0)
    high = np.minimum(points.max(axis=0) + reach + 1, suv.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    total = ndimage.correlate(suv[box].astype(np.float64), kernel, mode="constant", cval=0.0)
    inside = np.zeros(suv.shape, dtype=bool)
    inside[tuple(slice(int(r), int(n - r)) for r, n in zip(reach, suv.shape))] = True
    valid = focus[box] & inside[box]
    if not valid.any():
        return None
    return float(total[valid].max() / kernel.sum())


def bladder_relation(
    focus: np.ndarray, bladder: np.ndarray, spacing: tuple[float, float, float], adjacent_mm: float
) -> tuple[BladderRelation, float | None]:
    """Closest centre-to-centre distance from the isocontour to the bladder mask and what it means."""
    if not bladder.any() or not focus.any():
        return "separate", None
    distance = ndimage.distance_transform_edt(~bladder, sampling=spacing)
    closest = float(distance[focus].min())
    if closest <= 1.01 * max(spacing):
        return "touching", round(closest, 1)
    if closest <= adjacent_mm:
        return "adjacent", round(closest, 1)
    return "separate", round(closest, 1)


def _background(
    suv: np.ndarray, region: np.ndarray, taken: np.ndarray, distance: np.ndarray, options: FindingsOptions
) -> float:
    """The surrounding uptake: a percentile (by default the median) of the region in a shell around it."""
    shell = options.background_shell_mm
    ring = region & ~taken & (distance >= shell[0]) & (distance <= shell[1])
    values = suv[ring] if ring.any() else suv[region & ~taken]
    return float(np.percentile(values, options.background_percentile)) if values.size else 0.0


def detect_foci(pet_suv: Volume, analysed: AnalysedRegion, options: FindingsOptions) -> list[DetectedFocus]:
    """Foci of the region, hottest first, each with its isocontour (see the module docstring)."""
    suv = pet_suv.array
    region = analysed.region
    spacing = pet_suv.spacing
    maxima = (suv == ndimage.maximum_filter(np.where(region, suv, -np.inf), size=3)) & region
    maxima &= suv >= options.min_suv
    points = np.argwhere(maxima)
    points = points[np.argsort(-suv[tuple(points.T)], kind="stable")]
    taken = np.zeros(suv.shape, dtype=bool)
    foci: list[DetectedFocus] = []
    for point in points:
        index = tuple(int(v) for v in point)
        if taken[index] or len(foci) >= options.max_foci:
            continue
        peak = float(suv[index])
        if foci:
            saddle = region & (suv >= options.saddle_fraction * peak)
            shoulder = _component(saddle, index)  # type: ignore[arg-type]
            if (shoulder & taken).any():
                continue
        distance = _distance_mm(suv.shape, spacing, index)  # type: ignore[arg-type]
        background = _background(suv, region, taken, distance, options)
        if peak < options.min_contrast * background:
            continue
        level = options.isocontour_fraction * peak
        note = f"{options.isocontour_fraction:.0%} of SUVmax (local background {background:.1f})"
        if level < options.min_contrast * background:
            level = background + options.adapted_fraction * (peak - background)
            note = (
                f"low contrast (41 % of SUVmax below {options.min_contrast:g} x background "
                f"{background:.1f}): "
                f"background + {options.adapted_fraction:.0%} of (SUVmax - background)"
            )
        allowed = region & ~taken & (distance <= options.search_radius_mm)
        mask = _component(allowed & (suv >= level), index)  # type: ignore[arg-type]
        if (mask & (distance >= options.search_radius_mm - max(spacing))).any():
            note += f"; reaches the {options.search_radius_mm:.0f} mm search sphere (volume is a lower bound)"
        taken |= mask
        foci.append(DetectedFocus(index, peak, float(level), mask, note))  # type: ignore[arg-type]
    return foci


def build_findings(
    pet_suv: Volume,
    analysed: AnalysedRegion,
    scorer: ReferenceScorer,
    prostatectomy: bool | None,
    options: FindingsOptions | None = None,
) -> Findings:
    """Foci with their measures, miPSMA scores and the suggested local category."""
    options = options or FindingsOptions()
    suv = pet_suv.array
    spacing = pet_suv.spacing
    foci: list[Focus] = []
    for number, candidate in enumerate(detect_foci(pet_suv, analysed, options), start=1):
        mask = candidate.mask
        relation, distance = bladder_relation(mask, analysed.bladder, spacing, options.adjacent_mm)
        score, score_note = scorer.score(candidate.suv_max)
        position = pet_suv.index_to_lps(np.array(candidate.index))
        centroid = pet_suv.index_to_lps(np.argwhere(mask).mean(axis=0))
        foci.append(Focus(
            number=number,
            suv_max=round(candidate.suv_max, 2),
            suv_peak=None if (peak := suv_peak(suv, mask, spacing)) is None else round(peak, 2),
            suv_mean=round(float(suv[mask].mean()), 2),
            volume_ml=round(float(mask.sum()) * analysed.voxel_ml, 2),
            suv_max_lps=tuple(round(float(v), 1) for v in position),  # type: ignore[arg-type]
            centroid_lps=tuple(round(float(v), 1) for v in centroid),  # type: ignore[arg-type]
            bladder_relation=relation,
            bladder_distance_mm=distance,
            mipsma=score,
            mipsma_note=score_note,
            mask=mask,
            contour_suv=round(candidate.level, 2),
            contour_note=candidate.note,
        ))
    category, category_note = suggest_local_category(prostatectomy, foci)
    bladder = analysed.bladder if analysed.bladder.any() else None
    return Findings(
        foci=foci,
        references=scorer.references,
        mipsma_assessable=scorer.assessable,
        mipsma_note=scorer.note,
        local_category=category,
        local_category_note=category_note,
        region_description=f"{analysed.description}; {analysed.excluded}",
        isocontour_fraction=options.isocontour_fraction,
        region_mask=analysed.region,
        bladder_mask=bladder,
    )


def suggest_local_category(prostatectomy: bool | None, foci: list[Focus]) -> tuple[str, str]:
    """PROMISE miT category suggested from the foci alone (Eiber et al. JNM 2018; Seifert et al. 2023)."""
    prefix = "Suggestion only, from automatically detected foci; a reader must confirm."
    count = f"{len(foci)} focus" if len(foci) == 1 else f"{len(foci)} foci"
    if prostatectomy:
        if foci:
            return "miTr", (
                f"{prefix} Status post radical prostatectomy and {count} in the prostate bed: local "
                "recurrence (miTr)."
            )
        return "miT0", (
            f"{prefix} Status post radical prostatectomy, no focus in the prostate bed: no local tumour "
            "(miT0)."
        )
    status = (
        "prostatectomy status unknown, prostate assumed in situ" if prostatectomy is None
        else "prostate in situ"
    )
    if foci:
        return "miT2", (
            f"{prefix} {status.capitalize()} with {count} in the prostate region: at least organ-confined "
            "tumour (miT2); extracapsular extension, seminal-vesicle and adjacent-organ invasion "
            "(miT3a/miT3b/miT4) are not assessed, so the category may be higher."
        )
    return "miT0", f"{prefix} {status.capitalize()}, no focus in the prostate region: no local tumour (miT0)."


def quantification_from(focus: Focus, analysed: AnalysedRegion) -> Quantification:
    """The legacy single-focus summary, from focus 1."""
    return Quantification(
        suv_max=focus.suv_max,
        suv_mean=focus.suv_mean,
        focal_volume_ml=focus.volume_ml,
        suv_max_lps=focus.suv_max_lps,
        suv_peak_region_note=(
            f"{analysed.description}; {analysed.excluded}; focal volume = isocontour of focus 1 "
            f"({focus.contour_note})"
        ),
    )
