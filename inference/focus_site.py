"""Where a focus lies: prostate, prostate bed, seminal vesicle, bladder wall, rectum/bowel, bone, lymph-node
region or other (docs/findings.md, "Anatomy per focus").

The analysed region is a sphere around the prostate (or its bed), so it also holds the pubic bone, the
rectum, the seminal vesicles and mesorectal or obturator fat with lymph nodes. Calling all of them "prostate
bed" misleads: unspecific bone uptake is a known [18F]PSMA-1007 pitfall, and only prostate / prostate-bed
foci may feed the miT suggestion. The site is decided at the focus's SUVmax, first by what is certain:

1. bone: the CT around the SUVmax is bone (median ≥ 150 HU within 4 mm), or a segmented bone holds it;
2. prostate: a segmented prostate (TotalSegmentator) holds it;
3. rectum/bowel: the segmented colon holds it, or bowel gas (< -400 HU) lies within 6 mm;
4. with an intact (or not known to be removed) prostate and no prostate mask: the usual prostate extent
   around the localised centre; the seminal vesicles cranial, posterior and lateral to it;
5. bladder wall: its isocontour touches the bladder above the bladder base;
6. after prostatectomy: the prostate bed, below the bladder base and near its centre line;
7. lymph-node region: a focus in fat (median of a 6-12 mm shell < -30 HU);
8. otherwise other.

Every call says why it was made (`SiteCall.evidence`), so a reader can overrule it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from inference.quantify import AIR_HU
from inference.result import BladderRelation, FocusSite, OrganMask
from inference.volume import Volume


@dataclass(frozen=True)
class SiteOptions:
    """Thresholds of the site rules (documented in docs/findings.md)."""

    bone_hu: float = 150.0
    bone_radius_mm: float = 4.0
    gas_hu: float = -400.0
    gas_radius_mm: float = 6.0
    fat_hu: float = -30.0
    fat_shell_mm: tuple[float, float] = (6.0, 12.0)
    prostate_radii_mm: tuple[float, float, float] = (25.0, 20.0, 22.0)
    """Half-axes (left-right, antero-posterior, cranio-caudal) of the prostate around its centre when no
    prostate mask exists: a large adult gland (about 20 x 15 x 17.5 mm) plus 5 mm for the centre's error."""
    bed_radii_mm: tuple[float, float, float] = (30.0, 25.0, 30.0)
    """Around the region centre, when no bladder was found."""
    bed_below_base_mm: tuple[float, float] = (-45.0, 5.0)
    """Cranio-caudal range of the prostate bed relative to the bladder base (below it, up to 5 mm above)."""
    bed_reach_mm: tuple[float, float] = (25.0, 30.0)
    """Left-right and antero-posterior reach of the prostate bed around the bladder base."""
    seminal_cranial_mm: float = 12.0
    seminal_lateral_mm: float = 8.0
    seminal_reach_mm: float = 50.0
    bladder_base_margin_mm: float = 5.0
    mask_margin_mm: float = 3.0


@dataclass
class SiteContext:
    """What the site rules look at besides the focus: the CT, the region and the anatomy known."""

    ct: Volume
    centre_lps: np.ndarray
    """The analysed region's centre: the prostate centre, or the prostate bed."""
    operated: bool | None
    """The anatomy the region holds: prostate bed (True), prostate (False), unknown (None)."""
    bladder_base_lps: np.ndarray | None
    """The bladder's lowest part (mean of its lowest 4 mm), where the bladder neck and the prostate (bed) are."""
    masks: dict[str, OrganMask] = field(default_factory=dict)
    options: SiteOptions = field(default_factory=SiteOptions)


@dataclass(frozen=True)
class SiteCall:
    site: FocusSite
    name: str
    evidence: str


def _ball(radius_mm: float, step_mm: float = 1.5, inner_mm: float = 0.0) -> np.ndarray:
    reach = int(np.ceil(radius_mm / step_mm))
    grid = (np.indices((2 * reach + 1,) * 3).reshape(3, -1).T - reach) * step_mm
    distance = np.linalg.norm(grid, axis=1)
    return grid[(distance <= radius_mm) & (distance >= inner_mm)]


def ct_values(ct: Volume, points_lps: np.ndarray) -> np.ndarray:
    """CT (HU) at LPS points, trilinear; outside the CT counts as air."""
    return ct.sample(points_lps, AIR_HU)


def _near(mask: OrganMask | None, point: np.ndarray, margin_mm: float) -> bool:
    if mask is None or mask.mask is None:
        return False
    return bool(mask.contains(point + _ball(margin_mm)).any())


def _side(dx: float) -> str:
    """Patient side of an LPS x offset (x grows towards the patient's left)."""
    return "left" if dx > 0 else "right"


def _bone_name(point: np.ndarray, context: SiteContext) -> tuple[str, str]:
    """Which bone, from the segmented bones when there are some, and the position: the pubic bones lie in
    front of the prostate (bed), the sacrum and coccyx behind it near the midline."""
    dx, dy, _ = point - context.centre_lps
    anterior = dy < -10.0
    where = f"{-dy:.0f} mm anterior to the region centre" if anterior else ""
    if _near(context.masks.get("sacrum"), point, context.options.mask_margin_mm):
        return "sacrum", "within the TotalSegmentator sacrum mask"
    for key in ("hip_left", "hip_right"):
        if _near(context.masks.get(key), point, context.options.mask_margin_mm):
            side = key.split("_")[1]
            name = f"{side} pubic bone" if anterior else f"{side} hip bone"
            return name, f"within the TotalSegmentator {key} mask" + (f", {where}" if where else "")
    if anterior:
        return "pubic bone", where
    if dy > 25.0 and abs(dx) < 35.0:
        return "sacrum/coccyx", f"{dy:.0f} mm posterior to the region centre, near the midline"
    return f"{_side(dx)} pelvic bone", f"{abs(dx):.0f} mm {_side(dx)} of the region centre"


def classify_site(point_lps: np.ndarray, relation: BladderRelation, context: SiteContext) -> SiteCall:
    """The site of a focus whose SUVmax lies at `point_lps` (see the module docstring for the order)."""
    options = context.options
    point = np.asarray(point_lps, dtype=float)
    core = float(np.median(ct_values(context.ct, point + _ball(options.bone_radius_mm))))
    if core >= options.bone_hu:
        name, where = _bone_name(point, context)
        return SiteCall("bone", name, f"CT median {core:.0f} HU within {options.bone_radius_mm:g} mm of the "
                                      f"SUVbw max: bone; {where}")
    for key in ("sacrum", "hip_left", "hip_right"):
        if _near(context.masks.get(key), point, options.mask_margin_mm):
            name, where = _bone_name(point, context)
            return SiteCall("bone", name, f"{where} (CT median {core:.0f} HU)")
    prostate = context.masks.get("prostate")
    if _near(prostate, point, options.mask_margin_mm):
        return SiteCall("prostate", "prostate", "within the TotalSegmentator prostate mask")
    if _near(context.masks.get("colon"), point, options.mask_margin_mm):
        return SiteCall("rectum/bowel", _bowel_name(point, context), "within the TotalSegmentator colon mask")
    gas = ct_values(context.ct, point + _ball(options.gas_radius_mm))
    if float(gas.min()) < options.gas_hu:
        return SiteCall("rectum/bowel", _bowel_name(point, context),
                        f"bowel gas ({float(gas.min()):.0f} HU) within {options.gas_radius_mm:g} mm of the SUVbw max")
    offset = point - context.centre_lps
    has_prostate_mask = prostate is not None and prostate.mask is not None
    intact = context.operated is not True
    if intact and not has_prostate_mask and _inside(offset, options.prostate_radii_mm):
        return SiteCall("prostate", "prostate",
                        "within the usual prostate extent around the localised prostate centre (no prostate mask)")
    if (intact and options.seminal_cranial_mm <= offset[2] <= options.seminal_reach_mm and offset[1] >= 0.0
            and abs(offset[0]) >= options.seminal_lateral_mm
            and float(np.linalg.norm(offset)) <= options.seminal_reach_mm):
        return SiteCall("seminal vesicle", f"{_side(offset[0])} seminal vesicle",
                        f"{offset[2]:.0f} mm cranial, {offset[1]:.0f} mm posterior and {abs(offset[0]):.0f} mm "
                        f"{_side(offset[0])} of the prostate centre, behind the bladder base")
    base = context.bladder_base_lps
    if (relation == "touching" and base is not None
            and point[2] > base[2] + options.bladder_base_margin_mm):
        return SiteCall("bladder wall", "bladder wall",
                        f"touches the bladder {point[2] - base[2]:.0f} mm above its base")
    if not intact and base is not None:
        below = point - base
        low, high = options.bed_below_base_mm
        if (low <= below[2] <= high and abs(below[0]) <= options.bed_reach_mm[0]
                and abs(below[1]) <= options.bed_reach_mm[1]):
            return SiteCall("prostate bed", "prostate bed",
                            f"{-below[2]:.0f} mm below the bladder base, {abs(below[0]):.0f} mm from its centre "
                            "line (the prostate-bed region)")
    elif not intact and _inside(offset, options.bed_radii_mm):
        return SiteCall("prostate bed", "prostate bed", "within the prostate-bed extent around the region centre")
    shell = ct_values(context.ct, point + _ball(options.fat_shell_mm[1], inner_mm=options.fat_shell_mm[0]))
    surround = float(np.median(shell))
    if surround < options.fat_hu:
        return SiteCall("lymph-node region", f"{_side(offset[0])} pelvic lymph-node region",
                        f"focus surrounded by fat (median {surround:.0f} HU at "
                        f"{options.fat_shell_mm[0]:g}-{options.fat_shell_mm[1]:g} mm)")
    return SiteCall("other", "pelvic soft tissue",
                    f"none of the site rules applies (CT {core:.0f} HU at the SUVbw max, {surround:.0f} HU around)")


def _inside(offset: np.ndarray, radii: tuple[float, float, float]) -> bool:
    return float(np.sum((offset / np.asarray(radii)) ** 2)) <= 1.0


def _bowel_name(point: np.ndarray, context: SiteContext) -> str:
    """Rectum for the bowel behind the prostate / bed, else bowel."""
    dx, dy, dz = point - context.centre_lps
    return "rectal wall" if dy > 0 and abs(dx) < 40.0 and dz < 40.0 else "bowel"


def bladder_base(bladder: np.ndarray, grid: Volume) -> np.ndarray | None:
    """The bladder mask's lowest 4 mm, averaged (LPS), or None without a bladder."""
    if not bladder.any():
        return None
    points = grid.index_to_lps(np.argwhere(bladder))
    return points[points[:, 2] <= points[:, 2].min() + 4.0].mean(axis=0)
