"""The published preprocessing: 200 mm cube crop in native grids, SUV, scaling, resize, centre crop, metadata.

Faithful to the authors' pipeline (dcm2niix + nibabel volumes, `crop_by_prostate_or_ub.py`, the MONAI
validation transforms of `Model_*.py`): the crop is computed with the RAS affine nibabel would give, the
intensity and size transforms are MONAI's own, so a published checkpoint sees the input it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.transforms import CenterSpatialCrop, Resize, ScaleIntensity, ScaleIntensityRange

from inference.model_specs import CT_RANGE, CUBE_HALF_WIDTH_MM, PET_SUV_RANGE, PSA_SCALE_MAX, ModelSpec
from inference.volume import Volume

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class PreprocessError(ValueError):
    """The input cannot be turned into a model input (e.g. the cube misses the image)."""


@dataclass(frozen=True)
class IndexBox:
    """A half-open voxel index range per axis of one grid: lower <= index < upper."""

    lower: tuple[int, int, int]
    upper: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(hi - lo) for lo, hi in zip(self.lower, self.upper, strict=True))  # type: ignore[return-value]

    @property
    def k_range(self) -> tuple[int, int]:
        """The slices to read from the series (axis 2)."""
        return self.lower[2], self.upper[2]

    @property
    def empty(self) -> bool:
        return any(size <= 0 for size in self.shape)


def cube_box(
    affine_lps: np.ndarray,
    shape: tuple[int, int, int],
    center_lps: tuple[float, float, float] | np.ndarray,
    half_width_mm: float = CUBE_HALF_WIDTH_MM,
) -> IndexBox:
    """Voxel range of the cube centre ± half_width (mm) in one grid, as the authors computed it.

    The two corners centre-100 and centre+100 (in RAS, as nibabel gives the affine) are mapped with the
    inverse affine, rounded with numpy (halves to even), clipped to [0, shape], and the range taken from the
    lower to the higher index on each axis (axes running towards -RAS swap the two).
    """
    affine_ras = _LPS_TO_RAS @ np.asarray(affine_lps, dtype=float)
    center_ras = _LPS_TO_RAS[:3, :3] @ np.asarray(center_lps, dtype=float)
    inverse = np.linalg.inv(affine_ras[:3, :3])
    limit = np.asarray(shape, dtype=float)
    corners = [
        np.clip(np.round(inverse @ (center_ras + sign * half_width_mm - affine_ras[:3, 3])), 0, limit)
        for sign in (-1.0, 1.0)
    ]
    lower = np.minimum(corners[0], corners[1]).astype(int)
    upper = np.maximum(corners[0], corners[1]).astype(int)
    return IndexBox(tuple(int(v) for v in lower), tuple(int(v) for v in upper))  # type: ignore[arg-type]


def crop(volume: Volume, box: IndexBox, k_offset: int = 0) -> Volume:
    """The voxels of `box` as a new Volume with its own affine.

    `k_offset` is the first slice `volume` holds when only a slice range of the series was read.
    """
    k0, k1 = box.lower[2] - k_offset, box.upper[2] - k_offset
    if k0 < 0 or k1 > volume.array.shape[2]:
        raise PreprocessError(f"crop slices {box.k_range} not inside the slices read (offset {k_offset})")
    array = volume.array[box.lower[0] : box.upper[0], box.lower[1] : box.upper[1], k0:k1]
    affine = volume.affine_lps.copy()
    affine[:3, 3] = (
        volume.affine_lps[:3, :3] @ np.array([box.lower[0], box.lower[1], k0], float)
        + (volume.affine_lps[:3, 3])
    )
    return Volume(
        np.ascontiguousarray(array),
        affine,
        series_uid=volume.series_uid,
        modality=volume.modality,
        notes=list(volume.notes),
    )


def _as_channel(array: np.ndarray) -> torch.Tensor:
    """One image as MONAI's LoadImage(ensure_channel_first=True) gives it: float32, channel first."""
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]


def _scale(image: torch.Tensor, spec: ModelSpec, kind: str) -> torch.Tensor:
    if spec.scaling == "minmax":
        return torch.as_tensor(ScaleIntensity()(image))
    low, high = CT_RANGE if kind == "ct" else PET_SUV_RANGE
    return torch.as_tensor(
        ScaleIntensityRange(a_min=low, a_max=high, b_min=0.0, b_max=1.0, clip=False)(image)
    )


def model_input(
    spec: ModelSpec,
    ct: np.ndarray,
    pet: np.ndarray,
    psa_ng_ml: float | None = None,
    prostatectomy: bool | None = None,
) -> np.ndarray:
    """The exact float32 tensor (channels, *spatial) the network gets for this spec.

    `ct` in HU and `pet` in the spec's units (SUVbw for B-D, Bq/ml for A), each on its own grid, already
    cropped for cube models. Steps: scale, MONAI Resize (area), CenterSpatialCrop, then the constant
    metadata channels psa/7434 and prostatectomy 1/0; channel order CT, PET, psa_norm, px.
    """
    if ct.ndim != 3 or pet.ndim != 3 or min(ct.shape) < 1 or min(pet.shape) < 1:
        raise PreprocessError(f"CT {ct.shape} and PET {pet.shape} must be non-empty 3-D arrays")
    resize = Resize(spatial_size=spec.resize)
    centre_crop = CenterSpatialCrop(roi_size=spec.roi) if spec.roi is not None else None
    channels = []
    for kind, image in (("ct", ct), ("pet", pet)):
        tensor = _scale(_as_channel(image), spec, kind)
        tensor = torch.as_tensor(resize(tensor))
        if centre_crop is not None:
            tensor = torch.as_tensor(centre_crop(tensor))
        channels.append(tensor.numpy().astype(np.float32, copy=False))
    if spec.uses_metadata:
        if psa_ng_ml is None or prostatectomy is None:
            raise PreprocessError(f"model {spec.id} needs PSA and prostatectomy status")
        spatial = channels[0].shape[1:]
        psa_norm = np.float32(psa_ng_ml / PSA_SCALE_MAX)
        channels.append(np.full((1, *spatial), psa_norm, dtype=np.float32))
        channels.append(np.full((1, *spatial), 1.0 if prostatectomy else 0.0, dtype=np.float32))
    result = np.concatenate(channels, axis=0).astype(np.float32, copy=False)
    if result.shape != spec.input_shape:
        raise PreprocessError(f"model {spec.id} input has shape {result.shape}, expected {spec.input_shape}")
    return result


def roi_slices(spec: ModelSpec) -> tuple[slice, slice, slice]:
    """Where the centre crop sits inside the resized grid (MONAI CenterSpatialCrop's own arithmetic)."""
    if spec.roi is None:
        return tuple(slice(0, size) for size in spec.resize)  # type: ignore[return-value]
    return tuple(CenterSpatialCrop(roi_size=spec.roi).compute_slices(spec.resize))  # type: ignore[return-value]
