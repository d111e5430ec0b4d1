"""Grad-CAM for the recurrence class, returned on the cropped PET grid in patient coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.attention import AttentionError, gradcam_map, to_patient
from inference.model_specs import get_spec
from inference.network import build_network
from inference.volume import Volume

CPU = torch.device("cpu")


def _pet_crop(shape: tuple[int, int, int] = (21, 21, 50)) -> Volume:
    affine = np.diag([4.0, -4.0, 4.0, 1.0])
    affine[:3, 3] = (-40.0, 60.0, -90.0)
    return Volume(np.zeros(shape, np.float32), affine, series_uid="1.2.3", modality="PT")


@pytest.mark.parametrize("model", ["D", "C"])
def test_gradcam_of_a_random_network_has_the_crop_geometry_and_finite_values(model: str) -> None:
    spec = get_spec(model)
    torch.manual_seed(0)
    net = build_network(spec.in_channels).eval()
    sample = np.random.default_rng(0).random(spec.input_shape, dtype=np.float32)
    heat = gradcam_map(net, sample, CPU)
    assert heat.shape == spec.input_shape[1:]
    crop = _pet_crop()
    attention = to_patient(heat, spec, crop)
    assert attention.array.shape == crop.array.shape
    assert np.array_equal(attention.affine_lps, crop.affine_lps)
    assert np.all(np.isfinite(attention.array))
    assert attention.array.min() >= 0.0 and attention.array.max() <= 1.0 + 1e-6
    assert attention.modality == "ATTENTION"
    # Running it twice on the same network must not stack hooks or change the answer.
    assert np.array_equal(gradcam_map(net, sample, CPU), heat)


def test_the_published_class_layer_target_also_works() -> None:
    spec = get_spec("D")
    net = build_network(4).eval()
    heat = gradcam_map(net, np.ones(spec.input_shape, np.float32), CPU, layer="class_layers.relu")
    assert heat.shape == spec.input_shape[1:] and np.all(np.isfinite(heat))


def test_an_unknown_target_layer_is_a_clear_error() -> None:
    with pytest.raises(AttentionError, match="not a module"):
        gradcam_map(build_network(4), np.ones(get_spec("D").input_shape, np.float32), CPU, layer="nope")


def test_attention_lands_where_the_network_looked_in_patient_coordinates() -> None:
    spec = get_spec("D")
    crop = _pet_crop((70, 70, 70))
    heat = np.zeros(spec.roi, np.float32)  # type: ignore[arg-type]
    heat[spec.roi[0] // 2, spec.roi[1] // 2, spec.roi[2] // 2] = 1.0  # type: ignore[index]
    attention = to_patient(heat, spec, crop)
    peak = np.unravel_index(int(np.argmax(attention.array)), attention.array.shape)
    # The ROI is centred in the 70^3 grid, which spans the crop: the peak is near the crop's centre.
    assert np.all(np.abs(np.array(peak) - 35) <= 1)
