"""The published architecture, the device choice, and reproducible probabilities on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.model_specs import SPECS, get_spec, route
from inference.network import DeviceError, build_network, make_deterministic, predict, resolve_device


def test_densenet121_has_the_published_parameter_count() -> None:
    assert sum(p.numel() for p in build_network(4).parameters()) == 11_310_530


def test_auto_picks_cuda_only_when_available_and_cuda_without_a_gpu_is_an_error() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            resolve_device("cuda")


def test_identical_input_gives_bit_identical_probabilities_on_cpu() -> None:
    torch.manual_seed(0)
    net = build_network(4)
    make_deterministic()
    sample = np.random.default_rng(1).random(get_spec("D").input_shape, dtype=np.float32)
    first = predict(net, sample, torch.device("cpu"))
    second = predict(net, sample.copy(), torch.device("cpu"))
    assert first.probability == second.probability
    assert first.logits == second.logits
    assert 0.0 <= first.probability <= 1.0
    assert np.isclose(first.probability, float(torch.softmax(torch.tensor(first.logits), 0)[1]))


def test_routing_follows_the_configuration() -> None:
    assert route("published-test", "D", prostatectomy=True) == "D"
    assert route("by-prostatectomy", "D", prostatectomy=True) == "C"
    assert route("by-prostatectomy", "D", prostatectomy=False) == "D"
    with pytest.raises(ValueError, match="unknown routing"):
        route("random", "D", prostatectomy=False)


def test_every_spec_is_consistent_with_the_network_it_names() -> None:
    for spec in SPECS.values():
        assert spec.in_channels == (4 if spec.uses_metadata else 2)
        assert spec.input_shape[0] == spec.in_channels
        assert spec.weights_file.endswith(".pt")
        assert spec.published_accuracy and spec.description
    assert get_spec("d").id == "D"
