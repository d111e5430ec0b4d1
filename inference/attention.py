"""Where the network looked: Grad-CAM for the recurrence logit, mapped back onto the patient.

MONAI's GradCAM runs on the network input; the map is then placed back into the resized grid at the
centre-crop offset and resized to the cropped PET grid, so it overlays the PET in patient coordinates.

Target layer: DenseNet121 downsamples by 32, so at `class_layers.relu` the D input (65x46x69) leaves a
2x1x2 map and the C input (30x40x30) a single voxel, which carries no location. `features.denseblock3`
(1/16 of the input: 4x3x4 for D) is the deepest layer that still localises, and is the default.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.transforms import Resize
from monai.visualize import GradCAM

from inference.model_specs import ModelSpec
from inference.preprocess import roi_slices
from inference.volume import Volume

DEFAULT_TARGET_LAYER = "features.denseblock3"
RECURRENCE_CLASS = 1


class AttentionError(RuntimeError):
    """Grad-CAM could not be computed (e.g. the target layer does not exist)."""


_CAMS: dict[tuple[int, str], GradCAM] = {}


def _gradcam_for(net: torch.nn.Module, layer: str) -> GradCAM:
    """One GradCAM per (network, layer): its hooks stay on the module, so never register them twice."""
    names = {name for name, _ in net.named_modules()}
    if layer not in names:
        raise AttentionError(f"Grad-CAM target layer {layer!r} is not a module of the network")
    key = (id(net), layer)
    cam = _CAMS.get(key)
    if cam is None or cam.nn_module.model is not net:
        cam = GradCAM(nn_module=net, target_layers=layer)
        _CAMS.clear()
        _CAMS[key] = cam
    return cam


def gradcam_map(
    net: torch.nn.Module, model_input: np.ndarray, device: torch.device, layer: str = DEFAULT_TARGET_LAYER
) -> np.ndarray:
    """Grad-CAM of class 1 over the network input's spatial grid, normalised to 0..1 (float32)."""
    cam = _gradcam_for(net, layer)
    net.eval()
    batch = torch.from_numpy(np.ascontiguousarray(model_input, dtype=np.float32))[None].to(device)
    with torch.enable_grad():
        heat = cam(x=batch, class_idx=RECURRENCE_CLASS)
    array = heat.detach().float().cpu().numpy()[0, 0]
    return np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def to_patient(heat: np.ndarray, spec: ModelSpec, pet_grid: Volume) -> Volume:
    """The map on the PET grid the input was made from (the cropped PET for cube models).

    Inverse of the preprocessing geometry: put the map back where CenterSpatialCrop took it from in the
    resized grid (zero outside), then resize to the PET grid's shape (trilinear).
    """
    resized = np.zeros(spec.resize, dtype=np.float32)
    resized[roi_slices(spec)] = heat
    back = Resize(spatial_size=pet_grid.array.shape, mode="trilinear", align_corners=False)(
        torch.from_numpy(resized)[None]
    )
    array = torch.as_tensor(back).numpy()[0].astype(np.float32)
    return Volume(
        np.nan_to_num(array),
        pet_grid.affine_lps.copy(),
        series_uid=pet_grid.series_uid,
        modality="ATTENTION",
        notes=[f"Grad-CAM (class {RECURRENCE_CLASS}) of model {spec.id}, normalised 0..1"],
    )
