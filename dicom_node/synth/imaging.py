"""How the scanners see the phantom: CT slices with a little noise, PET volumes with blur, noise and lesions.

PET lesion uptake is chosen so that, after the scanner's blur, the lesion peaks at its target SUVmax; the
value actually written (after noise and quantisation) is measured afterwards for the ground truth.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from dicom_node.synth.dicom_writer import CT_BITS_STORED, CT_INTERCEPT
from dicom_node.synth.phantom import Lesion, Phantom

CT_NOISE_HU = 8.0
PET_COV_AT_SUV1 = 0.12
PET_FWHM_RANGE_MM = (5.0, 7.0)


@dataclass(frozen=True)
class Grid:
    """Axial voxel centres in LPS mm: columns along x, rows along y, slices ascending along z."""

    xs: np.ndarray
    ys: np.ndarray
    zs: np.ndarray
    pixel_mm: float
    slice_mm: float

    @property
    def shape_zyx(self) -> tuple[int, int, int]:
        return self.zs.size, self.ys.size, self.xs.size


def axial_grid(matrix: int, fov_mm: float, z_low: float, extent_mm: float, slice_mm: float) -> Grid:
    pixel = fov_mm / matrix
    centres = -fov_mm / 2.0 + (np.arange(matrix) + 0.5) * pixel
    n_slices = max(1, int(round(extent_mm / slice_mm)))
    zs = z_low + (np.arange(n_slices) + 0.5) * slice_mm
    return Grid(centres, centres.copy(), zs, pixel, slice_mm)


def ct_slice(phantom: Phantom, grid: Grid, k: int, seed: int) -> np.ndarray:
    """Stored CT values (HU + 1024, 12 bit) of slice k, with seeded noise."""
    labels = phantom.labels(float(grid.zs[k]), grid.xs, grid.ys)
    hu = phantom.hu_table[labels]
    noise = np.random.default_rng([seed, 1, k]).standard_normal(hu.shape, dtype=np.float32)
    hu += noise * np.float32(CT_NOISE_HU)
    stored = np.rint(hu - np.float32(CT_INTERCEPT))
    return np.clip(stored, 0, 2**CT_BITS_STORED - 1).astype(np.uint16)


def _supersampled_axis(centres: np.ndarray, step: float, factor: int) -> np.ndarray:
    offsets = (np.arange(factor) + 0.5) / factor * step - step / 2.0
    return (centres[:, None] + offsets[None, :]).ravel()


def _base_suv(phantom: Phantom, grid: Grid) -> np.ndarray:
    """Tissue SUV per voxel, averaged over sub-pixels in-plane so small organs keep their partial volume."""
    factor = max(1, min(4, math.ceil(grid.pixel_mm / 2.0)))
    fine_x = _supersampled_axis(grid.xs, grid.pixel_mm, factor)
    fine_y = _supersampled_axis(grid.ys, grid.pixel_mm, factor)
    table = phantom.suv_table
    nz, ny, nx = grid.shape_zyx
    volume = np.empty((nz, ny, nx), dtype=np.float32)
    for k in range(nz):
        fine = table[phantom.labels(float(grid.zs[k]), fine_x, fine_y)]
        volume[k] = fine.reshape(ny, factor, nx, factor).mean(axis=(1, 3))
    return volume


def _sphere_fraction(lesion: Lesion, grid: Grid,
                     pad: tuple[int, int, int]) -> tuple[tuple[slice, ...], np.ndarray]:
    """Fraction of each voxel inside the lesion (4^3 sub-samples) in a box padded for blurring."""
    steps = (grid.slice_mm, grid.pixel_mm, grid.pixel_mm)
    axes = (grid.zs, grid.ys, grid.xs)
    centre = (lesion.center[2], lesion.center[1], lesion.center[0])
    box: list[slice] = []
    for axis, step, c, p in zip(axes, steps, centre, pad):
        lo = int(math.floor((c - lesion.radius - axis[0]) / step)) - 1 - p
        hi = int(math.ceil((c + lesion.radius - axis[0]) / step)) + 2 + p
        box.append(slice(max(0, lo), min(axis.size, max(0, hi))))
    sub = 4
    fine = [_supersampled_axis(axis[s], step, sub) - c for axis, s, step, c in zip(axes, box, steps, centre)]
    inside = (fine[0][:, None, None] ** 2 + fine[1][None, :, None] ** 2 + fine[2][None, None, :] ** 2
              <= lesion.radius**2)
    shape = tuple(s.stop - s.start for s in box)
    fraction = inside.reshape(shape[0], sub, shape[1], sub, shape[2], sub).mean(axis=(1, 3, 5))
    return tuple(box), fraction.astype(np.float32)


def pet_suv_volume(phantom: Phantom, grid: Grid, seed: int, fwhm_mm: float) -> np.ndarray:
    """SUV on the PET grid (z, y, x) as a scanner would reconstruct it."""
    sigma_mm = fwhm_mm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    sigma = (sigma_mm / grid.slice_mm, sigma_mm / grid.pixel_mm, sigma_mm / grid.pixel_mm)
    pad = tuple(int(math.ceil(4 * s)) + 1 for s in sigma)
    clean = _base_suv(phantom, grid)
    blurred = gaussian_filter(clean, sigma, mode="nearest")
    for lesion in phantom.lesions:
        box, fraction = _sphere_fraction(lesion, grid, pad)  # type: ignore[arg-type]
        if fraction.size == 0 or not fraction.any():
            continue
        spread = gaussian_filter(fraction, sigma, mode="constant")
        peak = np.unravel_index(int(np.argmax(spread)), spread.shape)
        at_peak = tuple(s.start + i for s, i in zip(box, peak))
        local_base = float(clean[at_peak])
        uptake = local_base + (lesion.target_suv_max - float(blurred[at_peak])) / float(spread[peak])
        extra = max(uptake, local_base + 0.5) - local_base
        clean[box] += np.float32(extra) * fraction
        blurred[box] += np.float32(extra) * spread
    reduction = 1.0
    for s in sigma:
        reduction *= min(1.0, 1.0 / (2.0 * math.sqrt(math.pi) * max(s, 1e-6)))
    noise_sd = PET_COV_AT_SUV1 / math.sqrt(reduction)
    noise = np.random.default_rng([seed, 2]).standard_normal(clean.shape, dtype=np.float32)
    noise *= np.sqrt(np.maximum(clean, 0.0)) * np.float32(noise_sd)
    blurred += gaussian_filter(noise, sigma, mode="nearest")
    np.maximum(blurred, 0.0, out=blurred)
    return blurred


def pet_fwhm(rng: np.random.Generator) -> float:
    return round(float(rng.uniform(*PET_FWHM_RANGE_MM)), 2)
