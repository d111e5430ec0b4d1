"""Reference-organ SUVmeans and the PROMISE V2 miPSMA expression score (Seifert et al., Eur Urol 2023;83:405).

The score compares a focus's SUVmax with the SUVmean of reference regions: below the blood pool 0; at or
above the blood pool 1; at or above the liver 2 (for [18F]PSMA-1007 the spleen, because the tracer's
hepatobiliary clearance raises liver uptake); at or above the parotid glands 3. The regions come from the
localiser's masks (TotalSegmentator; the blood pool is the descending thoracic aorta between T5 and T10),
mapped from the CT grid onto the PET grid and eroded against partial volume; the PET slices they cover are
read here, since they lie far outside the 200 mm analysis cube. Whatever is missing is reported as not
assessable, with the reason; nothing is estimated. References in an order PROMISE does not expect (blood
pool < spleen/liver < parotid glands) mean a segmentation or acquisition problem: no score then either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from inference.clinical import Tracer
from inference.result import Localisation, MiPsmaScore, OrganMask, ReferenceOrgan, ReferenceOrganName
from inference.volume import Series, VolumeError

log = logging.getLogger(__name__)

ORGANS: tuple[ReferenceOrganName, ...] = ("blood pool", "spleen", "liver", "parotid glands")
EROSION_MM: dict[str, float] = {"blood pool": 5.0, "spleen": 6.0, "liver": 6.0, "parotid glands": 6.0}
"""Voxels closer than this to the mask's edge are left out: the aortic wall, and the partial volume a PET
resolution of 5-7 mm FWHM causes at organ edges (about two PET voxels)."""
SHORT_NAMES = {"blood pool": "blood pool", "spleen": "spleen", "liver": "liver", "parotid glands": "parotid"}
"""How the score's evidence names each reference ("miPSMA 2 (≥ spleen 9.1, < parotid 14.2)")."""
PART_NAMES = {"parotid_gland_left": "left parotid gland", "parotid_gland_right": "right parotid gland"}


def uses_spleen(tracer: Tracer) -> tuple[bool, str]:
    """Whether the spleen replaces the liver as the score-2 reference, and why."""
    if tracer.is_psma_1007:
        return True, f"{tracer.note}: spleen instead of liver (hepatobiliary clearance of [18F]PSMA-1007)"
    return False, f"{tracer.note}: not [18F]PSMA-1007, liver used as the score-2 reference"


@dataclass
class _Voi:
    """The PET voxels of one mask, eroded: their SUVmean and how many there are."""

    mean: float | None
    voxels: int = 0
    volume_ml: float = 0.0
    how: str = ""
    note: str = ""
    clipped: bool = False


def _voi_mean(pet: Series, factor: float, mask: np.ndarray, affine_lps: np.ndarray, erosion: float) -> _Voi:
    """SUVmean of the PET voxels whose centres fall in the mask (nearest neighbour on its grid), eroded."""
    shape = np.array(mask.shape)
    corners = np.array(
        [[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    lps = (affine_lps[:3, :3] @ corners.T).T + affine_lps[:3, 3]
    inverse = np.linalg.inv(pet.affine_lps)
    pet_index = (inverse[:3, :3] @ lps.T).T + inverse[:3, 3]
    low = np.maximum(np.floor(pet_index.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(pet_index.max(axis=0)).astype(int) + 1, np.array(pet.shape))
    if np.any(high <= low):
        return _Voi(None, note="the mask lies outside the PET field of view")
    clipped = bool(
        np.any(np.floor(pet_index.min(axis=0)) < 0) or np.any(np.ceil(pet_index.max(axis=0)) >= pet.shape)
    )
    try:
        slab = pet.read(k_range=(int(low[2]), int(high[2])))
    except VolumeError as exc:
        return _Voi(None, note=f"PET slices could not be read: {exc}")
    values = slab.array[low[0]:high[0], low[1]:high[1], :] * np.float32(factor)
    index = np.indices(values.shape).reshape(3, -1).T + np.array([low[0], low[1], 0])
    points = (slab.affine_lps[:3, :3] @ index.T).T + slab.affine_lps[:3, 3]
    to_mask = np.linalg.inv(affine_lps)
    mask_index = np.rint((to_mask[:3, :3] @ points.T).T + to_mask[:3, 3]).astype(int)
    inside = np.all((mask_index >= 0) & (mask_index < shape), axis=1)
    on_pet = np.zeros(len(points), dtype=bool)
    on_pet[inside] = mask[tuple(mask_index[inside].T)]
    on_pet = on_pet.reshape(values.shape)
    if not on_pet.any():
        return _Voi(None, note="the mask covers no PET voxel centre (outside the PET field of view or too small)")
    core = ndimage.distance_transform_edt(on_pet, sampling=slab.spacing) > erosion
    how = f"eroded {erosion:g} mm"
    if not core.any():
        core, how = on_pet, f"too small to erode {erosion:g} mm, used whole"
    voxels = int(core.sum())
    volume = voxels * float(np.prod(slab.spacing)) / 1000.0
    return _Voi(round(float(values[core].mean()), 2), voxels, round(volume, 1), how, clipped=clipped)


def organ_suv_mean(pet: Series, factor: float, organ: OrganMask) -> ReferenceOrgan:
    """The organ's SUVmean and VOI size (and each part's, e.g. per parotid gland), or why there is none."""
    if organ.mask is None or organ.affine_lps is None:
        return ReferenceOrgan(organ.organ, None, organ.source, note=organ.note or "no mask supplied")
    erosion = EROSION_MM.get(organ.organ, 6.0)
    voi = _voi_mean(pet, factor, organ.mask, organ.affine_lps, erosion)
    if voi.mean is None:
        return ReferenceOrgan(organ.organ, None, organ.source, note=voi.note)
    method = (f"{organ.source}; mapped to the PET grid (nearest neighbour), {voi.how}: VOI {voi.voxels} PET "
              f"voxels ({voi.volume_ml:g} ml)")
    note = "the mask is partly outside the PET field of view; the covered part was used" if voi.clipped else ""
    parts = [organ_suv_mean(pet, factor, OrganMask(PART_NAMES.get(part.organ, part.organ), part.mask,
                                                   part.affine_lps, part.source, part.note))
             for part in organ.parts]
    return ReferenceOrgan(organ.organ, voi.mean, method, note=note, volume_ml=voi.volume_ml, parts=parts)


@dataclass
class Score:
    """One focus's miPSMA score, how it was reached, and the short evidence shown beside it."""

    value: MiPsmaScore | None
    note: str
    evidence: str


@dataclass
class ReferenceScorer:
    """The reference SUVmeans of one examination and the rule that turns a SUVmax into a miPSMA score."""

    references: list[ReferenceOrgan]
    second: ReferenceOrganName
    """"spleen" for [18F]PSMA-1007, else "liver"."""
    tracer_note: str
    notes: list[str] = field(default_factory=list)

    def _get(self, name: str) -> ReferenceOrgan:
        return next(r for r in self.references if r.name == name)

    @property
    def order_problem(self) -> str | None:
        """Why the references cannot be used together: not in the order PROMISE V2 presumes."""
        chain = [self._get("blood pool"), self._get(self.second), self._get("parotid glands")]
        known = [r for r in chain if r.suv_mean is not None]
        for lower_index, lower in enumerate(known):
            for higher in known[lower_index + 1:]:
                if lower.suv_mean >= higher.suv_mean:  # type: ignore[operator]
                    return (f"implausible reference order: {lower.name} SUVbw mean {lower.suv_mean:.1f} ≥ "
                            f"{higher.name} SUVbw mean {higher.suv_mean:.1f} (PROMISE V2 presumes blood pool < "
                            f"{self.second} < parotid glands; a segmentation or uptake problem)")
        return None

    @property
    def assessable(self) -> bool:
        needed = ("blood pool", self.second, "parotid glands")
        return self.order_problem is None and all(self._get(name).suv_mean is not None for name in needed)

    @property
    def note(self) -> str:
        problem = self.order_problem
        if problem is not None:
            return f"miPSMA score not assessable: {problem}; {self.tracer_note}"
        reasons: dict[str, list[str]] = {}
        for r in (self._get("blood pool"), self._get(self.second), self._get("parotid glands")):
            if r.suv_mean is None:
                reasons.setdefault(r.note or "not available", []).append(r.name)
        if not reasons:
            return f"miPSMA score assessable; {self.tracer_note}"
        missing = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in reasons.items())
        return f"miPSMA score not assessable for every focus ({missing}); {self.tracer_note}"

    def score(self, suv_max: float) -> Score:
        """PROMISE V2 score of one focus, or None with the reason (a bound when one is known)."""
        blood, second, parotid = self._get("blood pool"), self._get(self.second), self._get("parotid glands")
        names = SHORT_NAMES
        problem = self.order_problem
        if problem is not None:
            return Score(None, f"not assessable: {problem}", "miPSMA not assessable (implausible references)")
        if blood.suv_mean is None:
            return Score(None, f"not assessable: blood pool SUVbw mean unavailable ({blood.note or 'no mask'})",
                         "miPSMA not assessable (no blood pool)")
        if suv_max < blood.suv_mean:
            return Score(0, f"SUVbw max {suv_max:.1f} < blood pool SUVbw mean {blood.suv_mean:.1f}",
                         f"miPSMA 0 (< blood pool {blood.suv_mean:.1f})")
        above_blood = f"SUVbw max {suv_max:.1f} ≥ blood pool SUVbw mean {blood.suv_mean:.1f}"
        if second.suv_mean is None:
            return Score(None, f"not assessable (at least 1): {above_blood}; {second.name} SUVbw mean unavailable "
                               f"({second.note})",
                         f"miPSMA ≥ 1 (≥ blood pool {blood.suv_mean:.1f}; no {second.name})")
        if suv_max < second.suv_mean:
            return Score(1, f"{above_blood}, < {second.name} SUVbw mean {second.suv_mean:.1f}",
                         f"miPSMA 1 (≥ blood pool {blood.suv_mean:.1f}, < {names[second.name]} "
                         f"{second.suv_mean:.1f})")
        above_second = f"SUVbw max {suv_max:.1f} ≥ {second.name} SUVbw mean {second.suv_mean:.1f}"
        if parotid.suv_mean is None:
            return Score(None, f"not assessable (at least 2): {above_second}; parotid glands SUVbw mean unavailable "
                               f"({parotid.note})",
                         f"miPSMA ≥ 2 (≥ {names[second.name]} {second.suv_mean:.1f}; no parotid)")
        if suv_max < parotid.suv_mean:
            return Score(2, f"{above_second}, < parotid glands SUVbw mean {parotid.suv_mean:.1f}",
                         f"miPSMA 2 (≥ {names[second.name]} {second.suv_mean:.1f}, < parotid "
                         f"{parotid.suv_mean:.1f})")
        return Score(3, f"SUVbw max {suv_max:.1f} ≥ parotid glands SUVbw mean {parotid.suv_mean:.1f}",
                     f"miPSMA 3 (≥ parotid {parotid.suv_mean:.1f})")


def reference_scorer(pet: Series, factor: float, localisation: Localisation, tracer: Tracer) -> ReferenceScorer:
    """Reference SUVmeans from the localiser's masks (each organ's absence explained)."""
    spleen, tracer_note = uses_spleen(tracer)
    by_organ = {m.organ: m for m in localisation.reference_masks}
    why_none = localisation.reference_note or (
        f"no organ masks: the {localisation.method} localiser does not segment reference organs"
    )
    references: list[ReferenceOrgan] = []
    for name in ORGANS:
        organ = by_organ.get(name)
        if organ is None:
            references.append(ReferenceOrgan(name, None, "not available", note=why_none))
            continue
        references.append(organ_suv_mean(pet, factor, organ))
    log.info("reference organs", extra={"references": {r.name: r.suv_mean for r in references}})
    return ReferenceScorer(references, "spleen" if spleen else "liver", tracer_note)
