"""Prostate / bladder centre from CT densities and bony landmarks, without any network weights.

Works on a coarse (about 4 mm) grid aligned with the patient axes, so a 512² x 200-slice CT takes about a
second. The femoral heads (the two thickest bones, side by side) anchor the pelvis; the bladder is the
largest fluid-density blob between them; the pubic symphysis is the bone at the front midline below them;
the prostate is the soft-tissue mass behind the symphysis, under the bladder and in front of the rectum.
PET, when given, only confirms the prostate (PSMA uptake above the body background).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

import numpy as np
from scipy import ndimage as ndi

from inference.localize import LocalisationError
from inference.result import Localisation
from inference.volume import Series, Volume

log = logging.getLogger(__name__)

BODY_HU = -400.0
BONE_HU = 150.0
FLUID_HU = (-25.0, 32.0)
SOFT_HU = (15.0, 90.0)
GAS_HU = -500.0
HEAD_MIN_RADIUS_MM = 9.0
"""Inscribed radius a femoral head (with its acetabulum) reaches on the coarse bone mask; shafts stay below."""
HEAD_SEPARATION_MM = (110.0, 250.0)
HEAD_BODY_MARGIN_MM = 40.0
"""Soft tissue the body shows lateral to each femoral head at their level (hips)."""
BLADDER_MIN_ML = 8.0
BLADDER_EROSION_MM = 7.0
PROSTATE_RADII_MM = np.array([18.0, 14.0, 16.0])
PROSTATE_MIN_SOFT_FRACTION = 0.6
"""Share of soft-tissue voxels in a prostate-sized ellipsoid above which a prostate is taken as present."""
CHUNK_SLICES = 16


@dataclass
class Grid:
    """A CT on a grid whose axes run towards patient left, posterior and head (LPS), `affine` to LPS mm."""

    hu: np.ndarray
    affine: np.ndarray

    @property
    def spacing(self) -> np.ndarray:
        return np.abs(np.diag(self.affine)[:3])

    def world(self, ijk: np.ndarray) -> np.ndarray:
        return self.affine[:3, :3] @ np.asarray(ijk, dtype=float) + self.affine[:3, 3]

    def axis_mm(self, axis: int) -> np.ndarray:
        """LPS coordinate of every index along one axis (the grid is axis aligned)."""
        return self.affine[axis, axis] * np.arange(self.hu.shape[axis]) + self.affine[axis, 3]


def _block_mean(array: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    shape = [n // f for n, f in zip(array.shape, factors)]
    if min(shape) < 1:
        raise LocalisationError(f"CT of shape {array.shape} is too small to localise on a coarse grid")
    cropped = array[: shape[0] * factors[0], : shape[1] * factors[1], : shape[2] * factors[2]]
    return cropped.reshape(shape[0], factors[0], shape[1], factors[1], shape[2], factors[2]).mean(axis=(1, 3, 5))


def _block_affine(affine: np.ndarray, factors: tuple[int, int, int]) -> np.ndarray:
    """Affine of the block-averaged grid: coarse index q sits at fine index f*q + (f-1)/2."""
    scale = np.eye(4)
    for axis, factor in enumerate(factors):
        scale[axis, axis] = factor
        scale[axis, 3] = (factor - 1) / 2
    return affine @ scale


def _factors(spacing: tuple[float, float, float] | np.ndarray, grid_mm: float) -> tuple[int, int, int]:
    return tuple(max(1, int(round(grid_mm / s))) for s in spacing)  # type: ignore[return-value]


def to_grid(volume: Volume, grid_mm: float = 4.0) -> Grid:
    """Reorient a (near-)axial volume onto LPS-aligned axes and average it down to about grid_mm."""
    directions = volume.affine_lps[:3, :3] / np.asarray(volume.spacing)
    order = np.argmax(np.abs(directions), axis=1)  # array axis feeding each world axis
    if sorted(order.tolist()) != [0, 1, 2] or np.min(np.abs(directions[np.arange(3), order])) < 0.9:
        raise LocalisationError("CT is not an axial-like acquisition (axes more than 25° off the patient axes)")
    array = np.transpose(volume.array, order)
    permute = np.zeros((4, 4))
    permute[3, 3] = 1
    for world, axis in enumerate(order):
        permute[axis, world] = 1
    affine = volume.affine_lps @ permute
    for world in range(3):
        if affine[world, world] < 0:
            array = np.flip(array, axis=world)
            flip = np.eye(4)
            flip[world, world] = -1
            flip[world, 3] = array.shape[world] - 1
            affine = affine @ flip
    factors = _factors(np.abs(np.diag(affine)[:3]), grid_mm)
    hu = _block_mean(np.asarray(array, dtype=np.float32), factors).astype(np.float32)
    return Grid(hu=hu, affine=_block_affine(affine, factors))


def read_coarse(series: Series, grid_mm: float = 4.0) -> Volume:
    """Read a series straight onto a coarse grid, chunk by chunk, every n-th slice: little memory, fast."""
    spacing = (
        float(np.linalg.norm(series.affine_lps[:3, 0])),
        float(np.linalg.norm(series.affine_lps[:3, 1])),
        series.slice_step,
    )
    f0, f1, fz = _factors(spacing, grid_mm)
    chunks = []
    n_slices = series.shape[2]
    for start in range(0, n_slices, CHUNK_SLICES * fz):
        part = series.read(k_range=(start, min(n_slices, start + CHUNK_SLICES * fz)), step=fz)
        chunks.append(_block_mean(part.array, (f0, f1, 1)))
    affine = series.affine_lps.copy()
    affine[:3, 2] *= fz
    affine = _block_affine(affine, (f0, f1, 1))
    return Volume(np.concatenate(chunks, axis=2), affine, series.series_uid, series.modality, list(series.notes))


@dataclass
class Pelvis:
    """Landmarks in LPS mm."""

    head_right: np.ndarray
    head_left: np.ndarray
    midline_x: float
    symphysis: np.ndarray | None


class AnatomicalLocalizer:
    """The default localiser: landmarks and densities on a coarse CT grid (no weights)."""

    def __init__(self, grid_mm: float = 4.0) -> None:
        self.grid_mm = grid_mm

    def locate(self, ct: Series, pet: Series | None = None) -> Localisation:
        ct_volume = read_coarse(ct, self.grid_mm)
        pet_volume = read_coarse(pet, self.grid_mm) if pet is not None else None
        return locate_volume(ct_volume, pet_volume, self.grid_mm)


def _body(hu: np.ndarray) -> np.ndarray:
    mask = hu > BODY_HU
    labels, count = ndi.label(mask)
    if count == 0:
        raise LocalisationError("CT shows no body (no voxel above -400 HU)")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == int(np.argmax(sizes))
    in_plane = np.zeros((3, 3, 3), dtype=bool)
    in_plane[:, :, 1] = ndi.generate_binary_structure(2, 1)
    return ndi.binary_fill_holes(body, structure=in_plane)


def _femoral_heads(grid: Grid, body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two thickest bones side by side, inside a body wide enough to be a pelvis."""
    bone = (grid.hu > BONE_HU) & body
    if not bone.any():
        raise LocalisationError("CT does not cover the pelvis: no bone (above 150 HU) at all")
    box = tuple(slice(max(0, lo - 2), hi + 3) for lo, hi in zip(np.argwhere(bone).min(0), np.argwhere(bone).max(0)))
    bone = ndi.binary_closing(bone[box], iterations=1) & body[box]
    depth = ndi.distance_transform_edt(bone, sampling=grid.spacing)
    peaks = np.argwhere((depth == ndi.maximum_filter(depth, size=3)) & (depth >= HEAD_MIN_RADIUS_MM))
    peaks = peaks[np.argsort(depth[tuple(peaks.T)])[-400:]]
    radii = depth[tuple(peaks.T)]
    peaks = peaks + np.array([b.start for b in box])
    points = (grid.affine[:3, :3] @ peaks.T).T + grid.affine[:3, 3]
    body_x = grid.axis_mm(0)
    columns = cast(np.ndarray, body.any(axis=1))  # (x, z): body present in that column of the slice
    has_body = columns.any(axis=0)
    right_edge = np.where(has_body, body_x[np.argmax(columns, axis=0)], np.nan)
    left_edge = np.where(has_body, body_x[columns.shape[0] - 1 - np.argmax(columns[::-1], axis=0)], np.nan)

    a, b = np.triu_indices(len(points), k=1)
    delta = np.abs(points[a] - points[b])
    k = np.rint((peaks[a, 2] + peaks[b, 2]) / 2).astype(int)
    low = np.minimum(points[a, 0], points[b, 0])
    high = np.maximum(points[a, 0], points[b, 0])
    centre = (right_edge[k] + left_edge[k]) / 2
    with np.errstate(invalid="ignore"):
        valid = (
            (delta[:, 0] >= HEAD_SEPARATION_MM[0]) & (delta[:, 0] <= HEAD_SEPARATION_MM[1])
            & (delta[:, 1] <= 40) & (delta[:, 2] <= 30)
            & (np.abs((low + high) / 2 - centre) <= 45) & (low < centre) & (centre < high)
            # a pelvis has hips and buttocks outside the heads; a thigh crop does not
            & (low - right_edge[k] >= HEAD_BODY_MARGIN_MM) & (left_edge[k] - high >= HEAD_BODY_MARGIN_MM)
        )
    if not valid.any():
        z = grid.axis_mm(2)
        raise LocalisationError(
            f"CT does not cover the pelvis: no pair of femoral heads found in z {z[0]:.0f}..{z[-1]:.0f} mm"
        )
    score = np.minimum(radii[a], radii[b]) - 0.1 * delta[:, 2] - 0.1 * delta[:, 1]
    best = int(np.argmax(np.where(valid, score, -np.inf)))
    first, second = points[a[best]], points[b[best]]
    return (first, second) if first[0] < second[0] else (second, first)


def _box(grid: Grid, x: tuple[float, float], y: tuple[float, float], z: tuple[float, float]) -> np.ndarray:
    """Boolean mask of the voxels whose LPS coordinates fall in the given ranges."""
    inside = [
        (grid.axis_mm(axis) >= low) & (grid.axis_mm(axis) <= high)
        for axis, (low, high) in enumerate((x, y, z))
    ]
    return inside[0][:, None, None] & inside[1][None, :, None] & inside[2][None, None, :]


def _centroid(grid: Grid, mask: np.ndarray) -> np.ndarray:
    return grid.world(np.argwhere(mask).mean(axis=0))


def _symphysis(grid: Grid, body: np.ndarray, heads: tuple[np.ndarray, np.ndarray], mid_x: float) -> np.ndarray | None:
    head_y = (heads[0][1] + heads[1][1]) / 2
    head_z = (heads[0][2] + heads[1][2]) / 2
    region = _box(grid, (mid_x - 30, mid_x + 30), (head_y - 110, head_y - 15), (head_z - 80, head_z + 5))
    bone = (grid.hu > BONE_HU) & body & region
    labels, count = ndi.label(bone)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return _centroid(grid, labels == int(np.argmax(sizes)))


@dataclass
class Bladder:
    mask: np.ndarray
    base_z: float
    """Lowest point of the bladder near the midline (LPS z, mm), from the eroded core so leaks do not count."""
    volume_ml: float


def _bladder(grid: Grid, body: np.ndarray, pelvis: Pelvis) -> Bladder | None:
    """The fluid-density blob filling most of the space above the symphysis, between the femoral heads.

    The fluid mask is eroded (about 8 mm) before labelling so that fluid-filled bowel touching the bladder
    through a thin wall separates, then the chosen blob is grown back inside the fluid mask.
    """
    heads = (pelvis.head_right + pelvis.head_left) / 2
    smooth = ndi.uniform_filter(grid.hu, size=3) if grid.spacing.max() < 3.5 else grid.hu
    fluid = (smooth > FLUID_HU[0]) & (smooth < FLUID_HU[1]) & body
    fluid &= _box(
        grid, (pelvis.midline_x - 90, pelvis.midline_x + 90), (heads[1] - 120, heads[1] + 50),
        (heads[2] - 60, heads[2] + 130),
    )
    erosions = max(1, int(round(BLADDER_EROSION_MM / float(grid.spacing.min()))))
    cores = ndi.binary_erosion(fluid, iterations=erosions)
    bottom = pelvis.symphysis[2] if pelvis.symphysis is not None else heads[2] - 40
    expected = _box(
        grid, (pelvis.midline_x - 40, pelvis.midline_x + 40), (heads[1] - 100, heads[1] + 15),
        (bottom, heads[2] + 70),
    )
    labels, count = ndi.label(cores)
    if count == 0:
        return None
    inside = np.bincount(labels[expected], minlength=count + 1)
    inside[0] = 0
    best = int(np.argmax(inside))
    if inside[best] == 0:
        return None
    core = labels == best
    blob = ndi.binary_dilation(core, iterations=erosions, mask=fluid)
    volume_ml = float(blob.sum()) * float(np.prod(grid.spacing)) / 1000
    if volume_ml < BLADDER_MIN_ML:
        return None
    midline = core & _box(grid, (pelvis.midline_x - 20, pelvis.midline_x + 20), (-1e4, 1e4), (-1e4, 1e4))
    lowest = float(grid.axis_mm(2)[np.argwhere(midline if midline.any() else core)[:, 2]].min())
    return Bladder(mask=blob, base_z=lowest - erosions * float(grid.spacing[2]), volume_ml=volume_ml)


def _rectum_front_y(grid: Grid, body: np.ndarray, pelvis: Pelvis, z: tuple[float, float]) -> float | None:
    heads = (pelvis.head_right + pelvis.head_left) / 2
    anterior = pelvis.symphysis[1] + 20 if pelvis.symphysis is not None else heads[1] - 20
    gas = (grid.hu < GAS_HU) & body & _box(
        grid, (pelvis.midline_x - 30, pelvis.midline_x + 30), (anterior, heads[1] + 90), z
    )
    if not gas.any():
        return None
    return float(grid.axis_mm(1)[np.argwhere(gas)[:, 1]].min())


def _ellipsoid(grid: Grid, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    axes = [((grid.axis_mm(a) - centre[a]) / radii[a]) ** 2 for a in range(3)]
    return axes[0][:, None, None] + axes[1][None, :, None] + axes[2][None, None, :] <= 1.0


def _prostate(
    grid: Grid, body: np.ndarray, pelvis: Pelvis, bladder: Bladder | None
) -> tuple[np.ndarray, float] | None:
    """Soft-tissue centre behind the symphysis, under the bladder, in front of the rectum; with its fill."""
    if pelvis.symphysis is None:
        return None
    symphysis = pelvis.symphysis
    top = bladder.base_z + 6 if bladder is not None else symphysis[2] + 30
    top = min(top, symphysis[2] + 45)
    bottom = max(top - 50, symphysis[2] - 45)
    front = symphysis[1] + 15
    back = symphysis[1] + 80
    rectum = _rectum_front_y(grid, body, pelvis, (bottom, top + 20))
    if rectum is not None and rectum - 8 > front + 15:
        back = min(back, rectum - 8)
    smooth = ndi.uniform_filter(grid.hu, size=3) if grid.spacing.max() < 3.5 else grid.hu
    soft = (smooth > SOFT_HU[0]) & (smooth < SOFT_HU[1]) & body
    if bladder is not None:
        soft &= ~ndi.binary_dilation(bladder.mask, iterations=1)
    region = _box(grid, (pelvis.midline_x - 22, pelvis.midline_x + 22), (front, back), (bottom, top))
    candidates = soft & region
    if candidates.sum() < 3:
        return None
    centre = _centroid(grid, candidates)
    for _ in range(3):  # mean shift towards the soft-tissue mass, within the region
        window = _ellipsoid(grid, centre, PROSTATE_RADII_MM) & region
        if not (soft & window).any():
            break
        centre = _centroid(grid, soft & window)
    window = _ellipsoid(grid, centre, PROSTATE_RADII_MM)
    fill = float((soft & window).sum()) / max(1, int(window.sum()))
    return centre, fill


def _pet_ratio(pet: Volume, centre: np.ndarray) -> float | None:
    """PET uptake in a prostate-sized ball around `centre` over the median uptake of the body."""
    grid = to_grid(pet, float(max(pet.spacing)))
    values = grid.hu
    positive = values[values > 0]
    if positive.size == 0:
        return None
    window = _ellipsoid(grid, centre, PROSTATE_RADII_MM * 0.8)
    if not window.any():
        return None
    background = float(np.median(positive))
    return float(values[window].mean()) / background if background > 0 else None


def locate_volume(ct: Volume, pet: Volume | None = None, grid_mm: float = 4.0) -> Localisation:
    """Prostate centre when a prostate is found with decent confidence, else the bladder centre."""
    grid = to_grid(ct, grid_mm)
    body = _body(grid.hu)
    right, left = _femoral_heads(grid, body)
    pelvis = Pelvis(head_right=right, head_left=left, midline_x=float((right[0] + left[0]) / 2), symphysis=None)
    pelvis.symphysis = _symphysis(grid, body, (right, left), pelvis.midline_x)
    bladder = _bladder(grid, body, pelvis)
    prostate = _prostate(grid, body, pelvis, bladder)
    landmarks = (
        f"femoral heads at {np.round(right).tolist()} / {np.round(left).tolist()} mm"
        + (f", symphysis at {np.round(pelvis.symphysis).tolist()} mm" if pelvis.symphysis is not None else "")
    )

    if prostate is not None:
        centre, fill = prostate
        confidence = float(np.clip((fill - 0.3) / 0.6, 0.0, 1.0))
        ratio = _pet_ratio(pet, centre) if pet is not None else None
        evidence = f"soft-tissue fill {fill:.2f}"
        if ratio is not None:
            evidence += f", PET uptake {ratio:.1f}x body median"
            confidence = float(np.clip(confidence + (0.15 if ratio >= 1.5 else -0.15), 0.0, 1.0))
        if fill >= PROSTATE_MIN_SOFT_FRACTION:
            log.info("prostate located", extra={"center_lps": np.round(centre, 1).tolist(), "fill": fill})
            return Localisation(
                center_lps=tuple(float(v) for v in centre),  # type: ignore[arg-type]
                organ="prostate",
                confidence=confidence,
                method="anatomical",
                detail=f"prostate: {evidence}; {landmarks}",
            )
        landmarks += f"; no prostate ({evidence} below {PROSTATE_MIN_SOFT_FRACTION})"
    if bladder is None:
        raise LocalisationError(
            f"no urinary bladder (fluid-density blob of at least {BLADDER_MIN_ML:g} ml) and no prostate found "
            f"in the pelvis ({landmarks})"
        )
    centre = _centroid(grid, bladder.mask)
    volume_ml = bladder.volume_ml
    log.info("bladder located", extra={"center_lps": np.round(centre, 1).tolist(), "volume_ml": volume_ml})
    return Localisation(
        center_lps=tuple(float(v) for v in centre),  # type: ignore[arg-type]
        organ="bladder",
        confidence=float(np.clip(volume_ml / 100, 0.3, 0.9)),
        method="anatomical",
        detail=f"bladder {volume_ml:.0f} ml; {landmarks}",
    )
