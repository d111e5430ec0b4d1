"""What an analysis returns: the typed contract between `inference/` and the node's report stage."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

import numpy as np
import pydicom

from inference.volume import Volume


class Finding(str, Enum):
    PRESENT = "present"
    ABSENT = "absent"
    UNDETERMINED = "undetermined"


Provenance = Literal["given", "tag", "imputed", "inferred"]


@dataclass
class ClinicalValue:
    """A metadata value fed to the model and where it came from (registered, DICOM tag, imputed, inferred)."""

    value: float | bool | None
    source: Provenance
    detail: str = ""


ReferenceOrganName = Literal["blood pool", "spleen", "liver", "parotid glands"]
"""The PROMISE V2 reference regions of the miPSMA expression score."""


@dataclass(eq=False)
class OrganMask:
    """An organ's mask as the localiser found it, cut to its bounding box, in patient geometry.

    Reference organs lie outside the 200 mm analysis cube, so the mask keeps its own grid (a box of the CT
    grid): `mask[i, j, k]` is at `affine_lps @ (i, j, k, 1)`. `mask` is None when the localiser could not
    supply the organ; `note` then says why (not in the field of view, empty mask, task weights missing).
    `organ` is a reference region name ("blood pool", ...) or, for the masks that name a focus's site, the
    segmenter's structure name ("prostate", "colon", "hip_left", ...).
    """

    organ: str
    mask: np.ndarray | None
    affine_lps: np.ndarray | None
    source: str
    """Where the mask came from, e.g. "TotalSegmentator task total, aorta.nii.gz (5130 voxels)"."""
    note: str = ""
    parts: list[OrganMask] = field(default_factory=list)
    """Sub-regions reported on their own (the parotid glands' left and right side), each with its mask."""

    def contains(self, lps: np.ndarray) -> np.ndarray:
        """Whether each LPS point (N, 3) falls in a voxel of the mask (nearest voxel; False outside it)."""
        points = np.atleast_2d(np.asarray(lps, dtype=float))
        if self.mask is None or self.affine_lps is None:
            return np.zeros(len(points), dtype=bool)
        inverse = np.linalg.inv(self.affine_lps)
        index = np.rint(points @ inverse[:3, :3].T + inverse[:3, 3]).astype(int)
        inside = np.all((index >= 0) & (index < np.array(self.mask.shape)), axis=1)
        found = np.zeros(len(points), dtype=bool)
        found[inside] = self.mask[tuple(index[inside].T)]
        return found


@dataclass
class Localisation:
    center_lps: tuple[float, float, float]
    organ: Literal["prostate", "bladder", "given"]
    confidence: float
    method: str
    detail: str = ""
    reference_masks: list[OrganMask] = field(default_factory=list)
    """Reference-organ masks for the miPSMA score; empty when the localiser supplies none."""
    reference_note: str = ""
    """Why there are no reference masks (e.g. "the anatomical localiser segments no reference organs")."""
    site_masks: list[OrganMask] = field(default_factory=list)
    """Masks that name where a focus lies (prostate, colon, hip bones, sacrum), when the localiser segments
    them (TotalSegmentator); the CT decides otherwise (inference/focus_site.py)."""


@dataclass
class Quantification:
    """Weight-free findings in the prostate / prostate-bed region, bladder excluded."""

    suv_max: float
    suv_mean: float
    focal_volume_ml: float
    suv_max_lps: tuple[float, float, float] | None = None
    suv_peak_region_note: str = ""


MiPsmaScore = Literal[0, 1, 2, 3]
"""PROMISE V2 miPSMA expression score of one focus: its SUVmax against reference organ SUVmeans."""

BladderRelation = Literal["separate", "adjacent", "touching"]
"""How a focus lies to the urinary bladder (its isocontour's closest distance to the bladder mask)."""


@dataclass
class ReferenceOrgan:
    """A PROMISE V2 reference region and how its SUVmean was obtained (or why it could not be)."""

    name: str
    """A ReferenceOrganName, or a side of one ("left parotid gland")."""
    suv_mean: float | None
    method: str
    """How the region was found, e.g. "TotalSegmentator aorta mask, eroded 2 voxels, 412 voxels"."""
    note: str = ""
    """Why `suv_mean` is None, when it is."""
    volume_ml: float | None = None
    """Volume of the VOI the SUVmean was taken in (the PET voxels averaged)."""
    parts: list[ReferenceOrgan] = field(default_factory=list)
    """The same measure per side (parotid glands: left, right)."""

    def to_summary(self) -> dict[str, object]:
        return {"name": self.name, "suv_mean": self.suv_mean, "method": self.method, "note": self.note,
                "volume_ml": self.volume_ml, "parts": [part.to_summary() for part in self.parts]}


FocusSite = Literal[
    "prostate", "prostate bed", "seminal vesicle", "bladder wall", "rectum/bowel", "bone", "lymph-node region",
    "other",
]
"""Where a focus lies (inference/focus_site.py); only prostate and prostate-bed foci feed the miT suggestion."""
LOCAL_SITES: tuple[FocusSite, ...] = ("prostate", "prostate bed")


@dataclass
class Focus:
    """One PSMA-avid focus of the analysed region (bladder excluded), PROMISE V2 terms, with where it lies.

    `mask` is the focus's isocontour on the grid of `AnalysisImages.pet_suv_crop` (same shape), the region
    the SEG carries; positions are patient LPS millimetres.
    """

    number: int
    """1-based, in order of decreasing SUVmax; the SR's Tracking Identifier uses it."""
    suv_max: float
    suv_peak: float | None
    """Mean SUV in the 1 cm³ sphere placed where it gives the highest mean (None when it cannot fit)."""
    suv_mean: float
    volume_ml: float
    suv_max_lps: tuple[float, float, float]
    centroid_lps: tuple[float, float, float]
    bladder_relation: BladderRelation
    bladder_distance_mm: float | None
    mipsma: MiPsmaScore | None
    mipsma_note: str
    """How the score was reached ("SUVbw max 6.9 ≥ spleen SUVbw mean 5.1 …") or why it is not assessable."""
    mask: np.ndarray | None = None
    contour_suv: float | None = None
    """The SUVbw level of the isocontour (41 % of SUVmax, or background-adapted at low contrast)."""
    contour_note: str = ""
    """How the isocontour was drawn (fraction, low-contrast adaptation, search sphere reached)."""
    contour_rule: str = "41 % of SUVbw max"
    """The rule in a few words: "41 % of SUVbw max", or "adaptive: background + 50 % of (max - background)"."""
    background_suv: float | None = None
    """The local background the contrast and the adaptive level were judged against (median SUVbw)."""
    suv_peak_ml: float | None = None
    """True volume of the voxels the SUVpeak sphere averaged (voxel centres inside, excluded voxels out)."""
    suv_peak_note: str = ""
    """How SUVpeak was taken, or why there is none (too much of the sphere excluded, voxels too coarse)."""
    site: FocusSite = "prostate"
    site_name: str = ""
    """The reader's name for where it lies, more precise than `site` when known ("pubic bone")."""
    site_evidence: str = ""
    """Why the site was chosen ("CT 310 HU around the SUVmax: bone; anterior to the prostate")."""
    call: str = ""
    """What the focus may mean, never a diagnosis ("PSMA-avid focus in the prostate-bed region; miTr if
    judged local recurrence")."""
    category_hint: str = ""
    """The rule-based category in a few words ("miTr if judged local recurrence", "miN candidate")."""
    mipsma_evidence: str = ""
    """The score with its references in a few words: "miPSMA 2 (≥ spleen 9.1, < parotid 14.2)"."""

    @property
    def feeds_local_category(self) -> bool:
        """Only prostate and prostate-bed foci count towards the miT suggestion."""
        return self.site in LOCAL_SITES

    @property
    def where(self) -> str:
        return self.site_name or self.site


@dataclass
class Findings:
    """Every focus of the region and the PROMISE-style summary: what the SR, the SEG and the SC show."""

    foci: list[Focus]
    references: list[ReferenceOrgan]
    mipsma_assessable: bool
    mipsma_note: str
    local_category: str | None
    """The rule-based PROMISE V2 local category ("miTr", "miT2u", "miT2m", "miT0"), independent of the
    classifier; None when none may be suggested (prostatectomy status unknown)."""
    local_category_note: str
    region_description: str
    isocontour_fraction: float
    region_mask: np.ndarray | None = None
    """The analysed prostate / prostate-bed region on the PET crop grid (bladder already removed)."""
    bladder_mask: np.ndarray | None = None
    """The excluded urinary bladder on the PET crop grid (None when none was found)."""
    region_suv_max: float | None = None
    """The analysed region's own SUVbw max and mean (bladder excluded), and its volume."""
    region_suv_mean: float | None = None
    region_volume_ml: float | None = None
    min_suv: float = 4.0
    """The detection rule: a focus has SUVbw max ≥ `min_suv` and ≥ `min_contrast` × its local background."""
    min_contrast: float = 1.5
    tracer_note: str = ""
    """Which tracer was recognised and from what (code sequence, text, site default), and what it means
    for the miPSMA references."""
    spill_note: str = ""
    """Maxima on the bladder's edge left out as urine spill-over (how many, how hot), or empty."""

    @property
    def no_focus_statement(self) -> str:
        """What "no focus" means, with the thresholds a lower focus stays below."""
        return (f"No focus with SUVbw max ≥ {self.min_suv:g} and ≥ {self.min_contrast:g} × local background "
                "in the analysed region")

    def to_summary(self) -> dict[str, object]:
        """Plain JSON-ready findings without masks: for the results table, the audit and `analyze --json`."""

        def rounded(values: tuple[float, float, float]) -> list[float]:
            return [round(float(v), 1) for v in values]

        return {
            "foci": [
                {
                    "number": f.number, "suv_max": f.suv_max, "suv_peak": f.suv_peak, "suv_mean": f.suv_mean,
                    "volume_ml": f.volume_ml, "suv_max_lps": rounded(f.suv_max_lps),
                    "centroid_lps": rounded(f.centroid_lps), "bladder_relation": f.bladder_relation,
                    "bladder_distance_mm": f.bladder_distance_mm, "mipsma": f.mipsma,
                    "mipsma_note": f.mipsma_note, "mipsma_evidence": f.mipsma_evidence,
                    "contour_suv": f.contour_suv, "contour_note": f.contour_note, "contour_rule": f.contour_rule,
                    "background_suv": f.background_suv, "suv_peak_ml": f.suv_peak_ml,
                    "suv_peak_note": f.suv_peak_note, "site": f.site, "site_name": f.site_name,
                    "site_evidence": f.site_evidence, "call": f.call, "category_hint": f.category_hint,
                }
                for f in self.foci
            ],
            "references": [r.to_summary() for r in self.references],
            "mipsma_assessable": self.mipsma_assessable,
            "mipsma_note": self.mipsma_note,
            "local_category": self.local_category,
            "local_category_note": self.local_category_note,
            "region_description": self.region_description,
            "isocontour_fraction": self.isocontour_fraction,
            "region_suv_max": self.region_suv_max,
            "region_suv_mean": self.region_suv_mean,
            "region_volume_ml": self.region_volume_ml,
            "detection": self.no_focus_statement,
            "tracer_note": self.tracer_note,
            "spill_note": self.spill_note,
        }


@dataclass
class AnalysisImages:
    """Images the Secondary Capture is drawn from, each a Volume in patient geometry."""

    ct_crop: Volume
    pet_suv_crop: Volume
    attention: Volume | None = None
    crop_box_lps: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None


@dataclass
class AnalysisResult:
    finding: Finding
    probability: float | None
    threshold: float
    model_id: str | None
    weights_sha256: str | None
    classifier_run: bool
    classifier_note: str
    software_version: str
    psa: ClinicalValue
    prostatectomy: ClinicalValue
    localisation: Localisation
    quantification: Quantification | None
    suv_factor: float
    pet_series_uid: str
    ct_series_uid: str
    device: str
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    images: AnalysisImages | None = None
    model_input: np.ndarray | None = None
    model_description: str = ""
    published_performance: str = ""
    suv_notes: list[str] = field(default_factory=list)
    findings: Findings | None = None
    series_headers: dict[str, list[pydicom.Dataset]] = field(default_factory=dict)
    """Headers (no pixels) of the analysed instances by series UID: the report draws on them, unread again."""
    envelope_violations: list[str] = field(default_factory=list)
    """Why the inputs lie outside the conditions the model was validated for, in plain words (e.g. "uptake
    time 240 min > 150 min"); empty when inside. Set by the node from its configured envelope; the SR, the
    SC and the dashboard show it."""

    @property
    def region_is_prostate_bed(self) -> bool:
        """The analysed region is the prostate bed (known prostatectomy, or no prostate found on the CT)."""
        return operated_for_report(self.prostatectomy, self.localisation.organ) is True

    def to_summary(self) -> dict[str, object]:
        """Plain JSON-ready data (no images, no tensors): for `analyze --json`, the results table, the API."""
        quant = self.quantification
        return {
            "finding": self.finding.value,
            "probability": self.probability,
            "threshold": self.threshold,
            "model_id": self.model_id,
            "model_description": self.model_description,
            "weights_sha256": self.weights_sha256,
            "classifier_run": self.classifier_run,
            "classifier_note": self.classifier_note,
            "published_performance": self.published_performance,
            "software_version": self.software_version,
            "psa": {"value": self.psa.value, "source": self.psa.source, "detail": self.psa.detail},
            "prostatectomy": {
                "value": self.prostatectomy.value, "source": self.prostatectomy.source,
                "detail": self.prostatectomy.detail,
            },
            "localisation": {
                "center_lps": list(self.localisation.center_lps), "organ": self.localisation.organ,
                "confidence": self.localisation.confidence, "method": self.localisation.method,
                "detail": self.localisation.detail,
            },
            "quantification": None if quant is None else {
                "suv_max": quant.suv_max, "suv_mean": quant.suv_mean, "focal_volume_ml": quant.focal_volume_ml,
                "suv_max_lps": None if quant.suv_max_lps is None else list(quant.suv_max_lps),
                "note": quant.suv_peak_region_note,
            },
            "suv_factor": self.suv_factor,
            "suv_notes": list(self.suv_notes),
            "pet_series_uid": self.pet_series_uid,
            "ct_series_uid": self.ct_series_uid,
            "device": self.device,
            "timings": dict(self.timings),
            "warnings": list(self.warnings),
            "envelope_violations": list(self.envelope_violations),
            "findings": None if self.findings is None else self.findings.to_summary(),
            "crop_box_lps": None if self.images is None or self.images.crop_box_lps is None
            else [list(corner) for corner in self.images.crop_box_lps],
            "not_for_diagnostic_use": True,
        }


def known_prostatectomy(prostatectomy: ClinicalValue) -> bool | None:
    """The status a miT category may rest on: registered or read from a tag, never imputed or inferred.

    PROMISE's miTr needs a prostatectomy that happened and miT2u/miT2m an intact prostate; an imputed px = 1
    (what the published model is fed) or a guess from the localiser is neither.
    """
    if prostatectomy.source in ("given", "tag") and prostatectomy.value is not None:
        return bool(prostatectomy.value)
    return None


def operated_for_report(prostatectomy: ClinicalValue, organ_found: str | None) -> bool | None:
    """Whether the report describes a prostate bed: the known status, never an imputed one.

    An imputed px = 1 is what the published model is fed when the status is unknown; it says nothing about
    the patient's anatomy. The report then follows the localiser: no prostate found (centred on the
    bladder) means the prostate bed; a prostate found means the prostate; otherwise the status is unknown.
    """
    if prostatectomy.source != "imputed" and prostatectomy.value is not None:
        return bool(prostatectomy.value)
    if organ_found == "bladder":
        return True
    if organ_found == "prostate":
        return False
    return None
