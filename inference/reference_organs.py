"""Reference-organ SUVmeans and the PROMISE V2 miPSMA expression score (Seifert et al., Eur Urol 2023;83:405).

The score compares a focus's SUVmax with the SUVmean of reference regions: below the blood pool 0; at or
above the blood pool 1; at or above the liver 2 (for [18F]PSMA-1007 the spleen, because the tracer's
hepatobiliary clearance raises liver uptake); at or above the parotid glands 3. The regions come from the
localiser's masks (TotalSegmentator), mapped from the CT grid onto the PET grid and eroded against partial
volume; the PET slices they cover are read here, since they lie far outside the 200 mm analysis cube.
Whatever is missing is reported as not assessable, with the reason; nothing is estimated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from inference.result import Localisation, MiPsmaScore, OrganMask, ReferenceOrgan, ReferenceOrganName
from inference.volume import Series, VolumeError

log = logging.getLogger(__name__)

ORGANS: tuple[ReferenceOrganName, ...] = ("blood pool", "spleen", "liver", "parotid glands")
EROSION_MM: dict[str, float] = {"blood pool": 5.0, "spleen": 6.0, "liver": 6.0, "parotid glands": 6.0}
"""Voxels closer than this to the mask's edge are left out: the aortic wall, and the partial volume a PET
resolution of 5-7 mm FWHM causes at organ edges (about two PET voxels)."""


def uses_spleen(tracer: str) -> tuple[bool, str]:
    """Whether the spleen replaces the liver as the score-2 reference, and why."""
    name = tracer.strip()
    if not name:
        return True, (
            "tracer not named in the PET header: [18F]PSMA-1007 (the node's tracer) assumed, spleen used"
        )
    if "1007" in name:
        return True, f"tracer {name!r} is [18F]PSMA-1007: spleen instead of liver (hepatobiliary clearance)"
    return False, f"tracer {name!r} is not [18F]PSMA-1007: liver used as the score-2 reference"


def organ_suv_mean(pet: Series, factor: float, organ: OrganMask) -> ReferenceOrgan:
    """SUVmean of the PET voxels whose centres fall in the eroded mask (nearest neighbour on its grid)."""
    if organ.mask is None or organ.affine_lps is None:
        return ReferenceOrgan(organ.organ, None, organ.source, note=organ.note or "no mask supplied")
    shape = np.array(organ.mask.shape)
    corners = np.array(
        [[i, j, k] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1) for k in (0, shape[2] - 1)]
    )
    lps = (organ.affine_lps[:3, :3] @ corners.T).T + organ.affine_lps[:3, 3]
    inverse = np.linalg.inv(pet.affine_lps)
    pet_index = (inverse[:3, :3] @ lps.T).T + inverse[:3, 3]
    low = np.maximum(np.floor(pet_index.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(pet_index.max(axis=0)).astype(int) + 1, np.array(pet.shape))
    if np.any(high <= low):
        return ReferenceOrgan(organ.organ, None, organ.source,
                              note="the mask lies outside the PET field of view")
    clipped = bool(
        np.any(np.floor(pet_index.min(axis=0)) < 0) or np.any(np.ceil(pet_index.max(axis=0)) >= pet.shape)
    )
    try:
        slab = pet.read(k_range=(int(low[2]), int(high[2])))
    except VolumeError as exc:
        return ReferenceOrgan(organ.organ, None, organ.source, note=f"PET slices could not be read: {exc}")
    values = slab.array[low[0]:high[0], low[1]:high[1], :] * np.float32(factor)
    index = np.indices(values.shape).reshape(3, -1).T + np.array([low[0], low[1], 0])
    points = (slab.affine_lps[:3, :3] @ index.T).T + slab.affine_lps[:3, 3]
    to_mask = np.linalg.inv(organ.affine_lps)
    mask_index = np.rint((to_mask[:3, :3] @ points.T).T + to_mask[:3, 3]).astype(int)
    inside = np.all((mask_index >= 0) & (mask_index < shape), axis=1)
    on_pet = np.zeros(len(points), dtype=bool)
    on_pet[inside] = organ.mask[tuple(mask_index[inside].T)]
    on_pet = on_pet.reshape(values.shape)
    if not on_pet.any():
        return ReferenceOrgan(organ.organ, None, organ.source,
                              note="the mask covers no PET voxel centre (outside the PET field of view or "
                              "too small)")
    erosion = EROSION_MM[organ.organ]
    core = ndimage.distance_transform_edt(on_pet, sampling=slab.spacing) > erosion
    how = f"eroded {erosion:g} mm"
    if not core.any():
        core, how = on_pet, f"too small to erode {erosion:g} mm, used whole"
    voxel_ml = float(np.prod(slab.spacing)) / 1000.0
    method = (
        f"{organ.source}; mapped to the PET grid (nearest neighbour), {how}: {int(core.sum())} PET voxels "
        f"({core.sum() * voxel_ml:.0f} ml)"
    )
    note = "the mask is partly outside the PET field of view; the covered part was used" if clipped else ""
    return ReferenceOrgan(organ.organ, round(float(values[core].mean()), 2), method, note=note)


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
    def assessable(self) -> bool:
        needed = ("blood pool", self.second, "parotid glands")
        return all(self._get(name).suv_mean is not None for name in needed)

    @property
    def note(self) -> str:
        reasons: dict[str, list[str]] = {}
        for r in (self._get("blood pool"), self._get(self.second), self._get("parotid glands")):
            if r.suv_mean is None:
                reasons.setdefault(r.note or "not available", []).append(r.name)
        if not reasons:
            return f"miPSMA score assessable; {self.tracer_note}"
        missing = "; ".join(f"{', '.join(names)}: {reason}" for reason, names in reasons.items())
        return f"miPSMA score not assessable for every focus ({missing}); {self.tracer_note}"

    def score(self, suv_max: float) -> tuple[MiPsmaScore | None, str]:
        """PROMISE V2 score of one focus, or None with the reason (a bound when one is known)."""
        blood, second, parotid = self._get("blood pool"), self._get(self.second), self._get("parotid glands")
        if blood.suv_mean is None:
            return None, f"not assessable: blood pool SUVmean unavailable ({blood.note or 'no mask'})"
        if suv_max < blood.suv_mean:
            return 0, f"SUVmax {suv_max:.1f} < blood pool SUVmean {blood.suv_mean:.1f}"
        above_blood = f"SUVmax {suv_max:.1f} ≥ blood pool SUVmean {blood.suv_mean:.1f}"
        if second.suv_mean is None:
            return None, (
                f"not assessable (at least 1): {above_blood}; {second.name} SUVmean unavailable "
                f"({second.note})"
            )
        if suv_max < second.suv_mean:
            return 1, f"{above_blood}, < {second.name} SUVmean {second.suv_mean:.1f}"
        above_second = f"SUVmax {suv_max:.1f} ≥ {second.name} SUVmean {second.suv_mean:.1f}"
        if parotid.suv_mean is None:
            return None, (
                f"not assessable (at least 2): {above_second}; parotid glands SUVmean unavailable "
                f"({parotid.note})"
            )
        if suv_max < parotid.suv_mean:
            return 2, f"{above_second}, < parotid glands SUVmean {parotid.suv_mean:.1f}"
        return 3, f"SUVmax {suv_max:.1f} ≥ parotid glands SUVmean {parotid.suv_mean:.1f}"


def reference_scorer(pet: Series, factor: float, localisation: Localisation, tracer: str) -> ReferenceScorer:
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
