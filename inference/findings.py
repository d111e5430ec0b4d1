"""Every PSMA-avid focus of the analysed region, where it lies, and PROMISE V2 terms (docs/findings.md).

Foci are local maxima of the SUVbw inside the analysed region (bladder excluded), taken hottest first:

- a maximum is a focus candidate when its SUVmax reaches `min_suv` and `min_contrast` times its local
  background (median SUV of the region in a shell 15-25 mm around it, hotter foci left out);
- it is merged into a hotter focus (not counted) when it lies inside that focus's isocontour, or when the
  SUV between the two never drops below `saddle_fraction` of its own SUVmax (a shoulder, not a peak);
- its isocontour is the connected set at 41 % of its SUVmax, within the region and a search sphere around
  the maximum, without voxels of hotter foci; when 41 % of SUVmax does not clear the local background by
  `min_contrast`, the level is raised to background + 50 % of (SUVmax - background), because a fixed 41 %
  level then spreads through the surrounding PSMA-avid tissue. Each focus records which rule drew it.

Measures follow IBSI definitions on the focus's isocontour (the ROI): SUVmax = maximum intensity (IBSI
84IY), SUVmean = mean intensity (Q4LE), volume = voxel count x voxel volume (approximate volume, YEKZ);
SUVpeak = the highest mean of a 1 cm³ sphere centred on a voxel of the focus, voxel centres inside the
sphere counted whole (global intensity peak, 0F91), with two deviations (`suv_peak`): excluded voxels (the
bladder, other foci) never enter the sphere, and it is reported only where the focus's SUVmax bounds it.

Where each focus lies is decided by inference/focus_site.py; only prostate / prostate-bed foci feed the
rule-based miT suggestion, which is made only when the prostatectomy status is registered or tagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from inference.focus_site import SiteCall, SiteContext, classify_site
from inference.quantify import AnalysedRegion
from inference.reference_organs import ReferenceScorer
from inference.result import BladderRelation, Findings, Focus, Quantification
from inference.volume import Volume

PEAK_SPHERE_RADIUS_MM = (3.0 / (4.0 * math.pi) * 1000.0) ** (1.0 / 3.0)
"""Radius of a 1 cm³ sphere (6.20 mm)."""
PEAK_MIN_VOXELS = 7
"""Fewest voxel centres the 1 cm³ sphere must hold for SUVpeak to mean more than SUVmax (else None)."""
PEAK_MAX_EXCLUDED = 0.25
"""At most this fraction of the sphere's voxel centres may be excluded (bladder, other foci) for a sphere
position to count: beyond it the mean no longer stands for a 1 cm³ volume of this focus."""
SUGGESTION = "Rule-based PROMISE V2 suggestion, independent of the classifier"


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
    spill_fraction: float = 0.5
    """A maximum touching the bladder below this fraction of the urine's SUVbw is urine spill-over, not a
    focus: the blurred edge of a uniform hot region reaches half its activity at the edge and less outside."""
    max_foci: int = 20


@dataclass
class DetectedFocus:
    """A focus as detection leaves it: its maximum, isocontour level and mask (on the PET crop grid)."""

    index: tuple[int, int, int]
    suv_max: float
    level: float
    mask: np.ndarray
    note: str
    rule: str
    background: float


@dataclass(frozen=True)
class Peak:
    """SUVpeak of one focus, the true volume averaged, and how it was taken (or why there is none)."""

    value: float | None
    volume_ml: float | None
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


def suv_peak(suv: np.ndarray, focus: np.ndarray, spacing: tuple[float, float, float],
             excluded: np.ndarray | None = None) -> Peak:
    """The highest mean of a 1 cm³ sphere centred on a focus voxel, wholly inside the image.

    Voxels count when their centre lies in the sphere (as IBSI defines the peak: not partial-volume weighted),
    so the sphere's true volume is its voxel count times the voxel volume (1.22 ml at 4 mm voxels). Excluded
    voxels never enter the mean; a position where more than PEAK_MAX_EXCLUDED of the sphere is excluded
    does not count. None, with the reason, when no position counts, when the voxels are too coarse, or
    when the best sphere's mean exceeds the focus's SUVmax (uptake of a neighbouring structure in it).
    """
    offsets = _ball_offsets(spacing, PEAK_SPHERE_RADIUS_MM)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    size = len(offsets)
    sphere = (f"1 cm³ sphere (radius {PEAK_SPHERE_RADIUS_MM:.1f} mm, voxel centres inside: {size} voxels = "
              f"{size * voxel_ml:.2f} ml)")
    if size < PEAK_MIN_VOXELS:
        return Peak(None, None, f"none: PET voxels too coarse, the {sphere} holds fewer than {PEAK_MIN_VOXELS}")
    if not focus.any():
        return Peak(None, None, "none: empty focus")
    reach = np.abs(offsets).max(axis=0)
    kernel = np.zeros(tuple(2 * reach + 1), dtype=np.float64)
    kernel[tuple((offsets + reach).T)] = 1.0
    points = np.argwhere(focus)
    low = np.maximum(points.min(axis=0) - 2 * reach, 0)
    high = np.minimum(points.max(axis=0) + 2 * reach + 1, suv.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
    usable = np.ones(suv.shape, dtype=np.float64) if excluded is None else (~excluded).astype(np.float64)
    values = suv[box].astype(np.float64) * usable[box]
    total = ndimage.correlate(values, kernel, mode="constant", cval=0.0)
    count = ndimage.correlate(usable[box], kernel, mode="constant", cval=0.0)
    inside = np.zeros(suv.shape, dtype=bool)
    inside[tuple(slice(int(r), int(n - r)) for r, n in zip(reach, suv.shape))] = True
    centres = focus[box] & inside[box]
    if not centres.any():
        return Peak(None, None, f"none: the {sphere} does not fit in the image around the focus")
    valid = centres & (count >= (1.0 - PEAK_MAX_EXCLUDED) * size - 1e-9)
    if not valid.any():
        return Peak(None, None, f"none: more than {PEAK_MAX_EXCLUDED * 100:.0f} % of the {sphere} is excluded "
                                "(urinary bladder or another focus) wherever it is centred in the focus")
    means = np.where(valid, total / np.maximum(count, 1.0), -np.inf)
    best = np.unravel_index(int(np.argmax(means)), means.shape)
    value = float(means[best])
    suv_max = float(suv[focus].max())
    if value > suv_max + 1e-6:
        return Peak(None, None, f"none: the best {sphere} holds uptake above the focus's SUVbw max "
                                f"({value:.2f} > {suv_max:.2f}), from a neighbouring structure")
    used = int(round(float(count[best])))
    left_out = f"; {size - used} excluded voxels left out" if used < size else ""
    return Peak(value, round(used * voxel_ml, 2),
                f"highest mean of a {sphere} centred on a focus voxel (IBSI global intensity peak){left_out}: "
                f"{used * voxel_ml:.2f} ml averaged")


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


@dataclass(frozen=True)
class Urine:
    """The bladder's urine uptake and where its spill-over could make maxima (the voxels touching it)."""

    suv: float
    touching: np.ndarray

    @classmethod
    def of(cls, suv: np.ndarray, bladder: np.ndarray, spacing: tuple[float, float, float]) -> Urine | None:
        if not bladder.any():
            return None
        interior = ndimage.binary_erosion(bladder)
        level = float(np.median(suv[interior if interior.any() else bladder]))
        distance = ndimage.distance_transform_edt(~bladder, sampling=spacing)
        return cls(level, (distance > 0) & (distance <= 1.01 * max(spacing)))


@dataclass
class Spill:
    """Maxima left out as urine spill-over (their SUVbw max) and the urine level the rule used."""

    urine_suv: float | None = None
    left_out: list[float] = field(default_factory=list)

    def note(self, fraction: float) -> str:
        if not self.left_out or self.urine_suv is None:
            return ""
        count = f"{len(self.left_out)} maximum" if len(self.left_out) == 1 else f"{len(self.left_out)} maxima"
        return (f"{count} touching the urinary bladder (SUVbw max up to {max(self.left_out):.1f}) not reported "
                f"as foci: below {fraction * 100:.0f} % of the urine's SUVbw {self.urine_suv:.1f}, so not "
                "distinguishable from urine spill-over")


def detect_foci(pet_suv: Volume, analysed: AnalysedRegion, options: FindingsOptions,
                spill: Spill | None = None) -> list[DetectedFocus]:
    """Foci of the region, hottest first, each with its isocontour (see the module docstring).

    Maxima touching the bladder below `spill_fraction` of the urine's SUVbw are not foci; `spill`, when
    given, records them, so the report can say they were left out.
    """
    suv = pet_suv.array
    region = analysed.region
    spacing = pet_suv.spacing
    urine = Urine.of(suv, analysed.bladder, spacing)
    spill = spill if spill is not None else Spill()
    spill.urine_suv = urine.suv if urine is not None else None
    maxima = (suv == ndimage.maximum_filter(np.where(region, suv, -np.inf), size=3)) & region
    maxima &= suv >= options.min_suv
    points = np.argwhere(maxima)
    points = points[np.argsort(-suv[tuple(points.T)], kind="stable")]
    taken = np.zeros(suv.shape, dtype=bool)
    foci: list[DetectedFocus] = []
    fraction = f"{options.isocontour_fraction:.0%}".replace("%", " %")
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
        if urine is not None and urine.touching[index] and peak < options.spill_fraction * urine.suv:
            spill.left_out.append(peak)
            continue
        level = options.isocontour_fraction * peak
        rule = f"{fraction} of SUVbw max"
        note = f"{fraction} of SUVbw max {peak:.2f} = {level:.2f} (local background {background:.1f})"
        if level < options.min_contrast * background:
            adapted = f"{options.adapted_fraction:.0%}".replace("%", " %")
            fixed = level
            level = background + options.adapted_fraction * (peak - background)
            rule = f"adaptive: background + {adapted} of (SUVbw max - background)"
            note = (f"low contrast: {fraction} of SUVbw max ({fixed:.2f}) is below {options.min_contrast:g} x "
                    f"local background {background:.2f}, so the level is background + {adapted} of (SUVbw max - "
                    f"background) = {level:.2f}")
        allowed = region & ~taken & (distance <= options.search_radius_mm)
        mask = _component(allowed & (suv >= level), index)  # type: ignore[arg-type]
        if (mask & (distance >= options.search_radius_mm - max(spacing))).any():
            note += f"; reaches the {options.search_radius_mm:.0f} mm search sphere (volume is a lower bound)"
        taken |= mask
        foci.append(DetectedFocus(index, peak, float(level), mask, note, rule,  # type: ignore[arg-type]
                                  background))
    return foci


def focus_words(site: SiteCall, status: bool | None) -> tuple[str, str]:
    """What a focus may mean (the call) and its rule-based category in a few words; never a diagnosis."""
    unknown = "no miT category: prostatectomy status unknown"
    if site.site == "prostate bed":
        if status is True:
            return ("PSMA-avid focus in the prostate-bed region; miTr if judged local recurrence",
                    "miTr if judged local recurrence")
        return f"PSMA-avid focus in the prostate-bed region; {unknown}", unknown
    if site.site == "prostate":
        if status is False:
            return ("PSMA-avid focus in the prostate; miT2 if judged tumour (extension not assessed)",
                    "miT2 if judged tumour")
        if status is True:
            return ("PSMA-avid focus at the prostate-bed / prostate position; miTr if judged local recurrence",
                    "miTr if judged local recurrence")
        return f"PSMA-avid focus in the prostate; {unknown}", unknown
    if site.site == "seminal vesicle":
        return f"PSMA-avid focus at the {site.name}; miT3b if judged tumour invasion", "miT3b if judged tumour"
    if site.site == "bladder wall":
        return ("PSMA-avid focus at the bladder wall; urinary activity or tumour (miT4, or miTr after "
                "prostatectomy, if judged tumour)", "urine or tumour: reader to judge")
    if site.site == "rectum/bowel":
        return (f"PSMA-avid focus at the {site.name}; physiological bowel uptake or tumour (miT4 if judged "
                "invasion)", "bowel uptake or miT4: reader to judge")
    if site.site == "bone":
        return (f"{site.name}: bone uptake (miM1b if metastasis; unspecific bone uptake is a known "
                "[18F]PSMA-1007 pitfall)", "miM1b if metastasis")
    if site.site == "lymph-node region":
        return f"PSMA-avid focus in the {site.name}; miN candidate", "miN candidate"
    return f"PSMA-avid focus in {site.name}; not categorised", "no category"


def build_findings(
    pet_suv: Volume,
    analysed: AnalysedRegion,
    scorer: ReferenceScorer,
    sites: SiteContext,
    status: bool | None,
    options: FindingsOptions | None = None,
) -> Findings:
    """Foci with their measures, sites, miPSMA scores and the rule-based local category.

    `sites` carries the anatomy the report describes; `status` is the prostatectomy status a category may
    rest on (registered or tagged; None when unknown, see `inference.result.known_prostatectomy`).
    """
    options = options or FindingsOptions()
    suv = pet_suv.array
    spacing = pet_suv.spacing
    spill = Spill()
    detected = detect_foci(pet_suv, analysed, options, spill)
    claimed = np.zeros(suv.shape, dtype=bool)
    for candidate in detected:
        claimed |= candidate.mask
    foci: list[Focus] = []
    for number, candidate in enumerate(detected, start=1):
        mask = candidate.mask
        relation, distance = bladder_relation(mask, analysed.bladder, spacing, options.adjacent_mm)
        score = scorer.score(candidate.suv_max)
        position = pet_suv.index_to_lps(np.array(candidate.index))
        centroid = pet_suv.index_to_lps(np.argwhere(mask).mean(axis=0))
        peak = suv_peak(suv, mask, spacing, excluded=analysed.bladder | (claimed & ~mask))
        site = classify_site(position, relation, sites)
        call, hint = focus_words(site, status)
        foci.append(Focus(
            number=number,
            suv_max=round(candidate.suv_max, 2),
            suv_peak=None if peak.value is None else min(round(peak.value, 2), round(candidate.suv_max, 2)),
            suv_mean=round(float(suv[mask].mean()), 2),
            volume_ml=round(float(mask.sum()) * analysed.voxel_ml, 2),
            suv_max_lps=tuple(round(float(v), 1) for v in position),  # type: ignore[arg-type]
            centroid_lps=tuple(round(float(v), 1) for v in centroid),  # type: ignore[arg-type]
            bladder_relation=relation,
            bladder_distance_mm=distance,
            mipsma=score.value,
            mipsma_note=score.note,
            mask=mask,
            contour_suv=round(candidate.level, 2),
            contour_note=candidate.note,
            contour_rule=candidate.rule,
            background_suv=round(candidate.background, 2),
            suv_peak_ml=peak.volume_ml,
            suv_peak_note=peak.note,
            site=site.site,
            site_name=site.name,
            site_evidence=site.evidence,
            call=call,
            category_hint=hint,
            mipsma_evidence=score.evidence,
        ))
    category, category_note = suggest_local_category(status, foci)
    bladder = analysed.bladder if analysed.bladder.any() else None
    region = analysed.region
    return Findings(
        foci=foci,
        references=scorer.references,
        mipsma_assessable=scorer.assessable,
        mipsma_note=scorer.note,
        local_category=category,
        local_category_note=category_note,
        region_description=f"{analysed.description}; {analysed.excluded}",
        isocontour_fraction=options.isocontour_fraction,
        region_mask=region,
        bladder_mask=bladder,
        region_suv_max=round(float(suv[region].max()), 2),
        region_suv_mean=round(float(suv[region].mean()), 2),
        region_volume_ml=round(float(region.sum()) * analysed.voxel_ml, 1),
        min_suv=options.min_suv,
        min_contrast=options.min_contrast,
        tracer_note=scorer.tracer_note,
        spill_note=spill.note(options.spill_fraction),
    )


def _count(foci: list[Focus], where: str) -> str:
    return f"{len(foci)} focus {where}" if len(foci) == 1 else f"{len(foci)} foci {where}"


def suggest_local_category(status: bool | None, foci: list[Focus]) -> tuple[str | None, str]:
    """PROMISE miT category from the prostate / prostate-bed foci alone (Eiber et al. JNM 2018; Seifert et al.
    2023), only on a registered or tagged prostatectomy status; None when the status is unknown."""
    local = [f for f in foci if f.feeds_local_category]
    left_out = [f for f in foci if not f.feeds_local_category]
    unused = ("; not used: " + ", ".join(f"focus {f.number} ({f.where})" for f in left_out)
              + " (not in the prostate / prostate bed)") if left_out else ""
    if status is None:
        return None, ("miT not suggested: prostatectomy status unknown (neither registered nor in the DICOM "
                      "tags; the classifier's imputed value is no clinical fact)")
    if status:
        if local:
            return "miTr", (f"{SUGGESTION}: status post radical prostatectomy (registered or tagged) and "
                            f"{_count(local, 'in the prostate-bed region')}: miTr if judged local "
                            f"recurrence{unused}.")
        return "miT0", (f"{SUGGESTION}: status post radical prostatectomy, no focus in the prostate-bed region: "
                        f"no local tumour (miT0){unused}.")
    if local:
        category, kind = ("miT2u", "unifocal") if len(local) == 1 else ("miT2m", "multifocal")
        return category, (f"{SUGGESTION}: prostate in situ (registered or tagged) with "
                          f"{_count(local, 'in the prostate')}: {category} ({kind}, organ-confined) if judged "
                          "tumour; extracapsular extension, seminal-vesicle and adjacent-organ invasion "
                          f"(miT3a/miT3b/miT4) are not assessed, so the category may be higher{unused}.")
    return "miT0", (f"{SUGGESTION}: prostate in situ, no focus in the prostate: no local tumour (miT0)"
                    f"{unused}.")


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
