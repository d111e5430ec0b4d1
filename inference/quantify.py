"""Weight-free findings: SUVmax, SUVmean and focal volume in the prostate / prostate-bed region.

These need no classifier weights, so every analysis reports them. Urine in the bladder is the strongest
confounder next to the prostate, so the bladder is found (a connected region of fluid density on CT, on the
PET grid, carrying tracer) and excluded. The region is a sphere around the prostate centre; when the
localiser only found the bladder (post-prostatectomy), around the prostate bed just below the bladder.
Definitions: SUVmax = hottest voxel of the region; focal volume = the 41 %-of-SUVmax isocontour connected
to that voxel; SUVmean = mean SUV inside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.result import Quantification
from inference.volume import Volume


@dataclass(frozen=True)
class QuantifyOptions:
    region_radius_mm: float = 40.0
    fluid_hu: tuple[float, float] = (-15.0, 20.0)
    min_bladder_ml: float = 10.0
    min_bladder_suv: float = 1.0
    bladder_margin_voxels: int = 1
    bed_below_bladder_mm: float = 15.0
    isocontour_fraction: float = 0.41


AIR_HU = -1000.0
"""What the CT reads outside its field of view."""


class QuantifyError(ValueError):
    """The region to quantify is empty (e.g. the centre lies outside the PET)."""


def ct_on_grid(ct: Volume, grid: Volume) -> np.ndarray:
    """CT values (HU) at the voxel centres of `grid`; outside the CT counts as air."""
    shape = grid.array.shape
    centres = grid.index_to_lps(np.indices(shape, dtype=np.float64).reshape(3, -1).T)
    return ct.sample(centres, AIR_HU).reshape(shape)


def find_bladder(
    pet_suv: Volume, ct_hu_on_pet: np.ndarray, center_lps: np.ndarray, options: QuantifyOptions
) -> np.ndarray:
    """Bladder mask on the PET grid: the largest tracer-carrying fluid-density component near the centre."""
    smoothed = ndimage.median_filter(ct_hu_on_pet, size=3)
    fluid = (smoothed >= options.fluid_hu[0]) & (smoothed <= options.fluid_hu[1])
    # Where fat meets soft tissue, partial volume gives thin sheets of fluid-like HU that would connect to
    # the bladder and carry its exclusion into neighbouring organs (seminal vesicles, rectal wall): opened away.
    fluid = ndimage.binary_opening(fluid)
    labels, count = ndimage.label(fluid)
    if count == 0:
        return np.zeros(fluid.shape, dtype=bool)
    voxel_ml = float(abs(np.linalg.det(pet_suv.affine_lps[:3, :3]))) / 1000.0
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(np.ones_like(smoothed), labels, index) * voxel_ml
    uptake = ndimage.mean(pet_suv.array, labels, index)
    centroids = np.array(ndimage.center_of_mass(fluid, labels, index)).reshape(-1, 3)
    distance = np.linalg.norm(pet_suv.index_to_lps(centroids) - center_lps, axis=1)
    score = np.where(
        (sizes >= options.min_bladder_ml) & (uptake >= options.min_bladder_suv) & (distance <= 100.0),
        sizes * uptake,
        0.0,
    )
    if not np.any(score > 0):
        return np.zeros(fluid.shape, dtype=bool)
    mask = labels == index[int(np.argmax(score))]
    if options.bladder_margin_voxels:
        mask = ndimage.binary_dilation(mask, iterations=options.bladder_margin_voxels)
    return mask


def region_center(
    pet_suv: Volume, bladder: np.ndarray, center_lps: np.ndarray, organ: str, options: QuantifyOptions
) -> tuple[np.ndarray, str]:
    """The prostate centre, or the prostate bed below the bladder when only the bladder was found."""
    if organ != "bladder":
        return center_lps, f"sphere of {options.region_radius_mm:.0f} mm around the {organ} centre"
    if not bladder.any():
        return center_lps, "bladder centre (bladder not delineated on CT)"
    points = pet_suv.index_to_lps(np.argwhere(bladder))
    lowest = points[:, 2] <= points[:, 2].min() + 4.0
    bottom = points[lowest].mean(axis=0)
    bed = bottom - np.array([0.0, 0.0, options.bed_below_bladder_mm])
    return bed, (
        f"sphere of {options.region_radius_mm:.0f} mm around the prostate bed, "
        f"{options.bed_below_bladder_mm:.0f} mm below the bladder base"
    )


@dataclass
class AnalysedRegion:
    """The prostate / prostate-bed region on the PET crop grid, bladder excluded, and how it was drawn."""

    region: np.ndarray
    bladder: np.ndarray
    description: str
    excluded: str
    voxel_ml: float
    centre_lps: tuple[float, float, float] = (0.0, 0.0, 0.0)
    """The sphere's centre: the prostate centre, or the prostate bed below the bladder."""


def analysed_region(
    pet_suv: Volume, ct: Volume, center_lps: tuple[float, float, float], organ: str, options: QuantifyOptions
) -> AnalysedRegion:
    """The sphere around the prostate (or its bed) on the PET grid, minus the bladder found on CT."""
    center = np.asarray(center_lps, dtype=float)
    bladder = find_bladder(pet_suv, ct_on_grid(ct, pet_suv), center, options)
    middle, description = region_center(pet_suv, bladder, center, organ, options)
    shape = pet_suv.array.shape
    lps = pet_suv.index_to_lps(np.indices(shape).reshape(3, -1).T).reshape(*shape, 3)
    region = (np.linalg.norm(lps - middle, axis=-1) <= options.region_radius_mm) & ~bladder
    if not region.any():
        raise QuantifyError("the prostate / prostate-bed region holds no PET voxels outside the bladder")
    voxel_ml = float(abs(np.linalg.det(pet_suv.affine_lps[:3, :3]))) / 1000.0
    bladder_ml = float(bladder.sum()) * voxel_ml
    excluded = f"bladder excluded ({bladder_ml:.0f} ml incl. margin)" if bladder.any() else "no bladder found"
    centre = (float(middle[0]), float(middle[1]), float(middle[2]))
    return AnalysedRegion(region, bladder, description, excluded, voxel_ml, centre)


def quantify(
    pet_suv: Volume,
    ct: Volume,
    center_lps: tuple[float, float, float],
    organ: str,
    options: QuantifyOptions | None = None,
    analysed: AnalysedRegion | None = None,
) -> Quantification:
    """SUVmax / SUVmean / focal volume around the centre, bladder excluded (PET in SUVbw)."""
    options = options or QuantifyOptions()
    found = analysed or analysed_region(pet_suv, ct, center_lps, organ, options)
    region = found.region
    shape = pet_suv.array.shape
    values = np.where(region, pet_suv.array, -np.inf)
    hottest = np.unravel_index(int(np.argmax(values)), shape)
    suv_max = float(pet_suv.array[hottest])
    above = region & (pet_suv.array >= options.isocontour_fraction * suv_max)
    labels, _ = ndimage.label(above)
    focal = labels == labels[hottest]
    return Quantification(
        suv_max=suv_max,
        suv_mean=float(pet_suv.array[focal].mean()),
        focal_volume_ml=float(focal.sum()) * found.voxel_ml,
        suv_max_lps=tuple(float(v) for v in pet_suv.index_to_lps(np.array(hottest))),  # type: ignore[arg-type]
        suv_peak_region_note=(
            f"{found.description}; {found.excluded}; focal volume = {options.isocontour_fraction:.0%} SUVmax "
            "isocontour connected to the hottest voxel"
        ),
    )
