"""The published network (MONAI DenseNet121, 3-D), the compute device, and a deterministic forward pass."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from monai.networks.nets import DenseNet121

DevicePreference = Literal["auto", "cpu", "cuda"]


class DeviceError(RuntimeError):
    """The configured device cannot be used here."""


def choose_device(preference: str = "auto") -> torch.device:
    """CUDA when available (auto) or when asked for; asking for CUDA on a machine without it is an error."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError("models.device is 'cuda' but no CUDA device is available (use auto or cpu)")
        return torch.device("cuda")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise DeviceError(f"unknown device {preference!r} (auto, cpu or cuda)")


def make_deterministic() -> None:
    """Same input, same probability: deterministic kernels where torch has them, no cuDNN autotuning."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True


def build_network(in_channels: int) -> DenseNet121:
    """Exactly the authors' architecture: DenseNet121(spatial_dims=3, in_channels=2|4, out_channels=2)."""
    return DenseNet121(spatial_dims=3, in_channels=in_channels, out_channels=2)


@dataclass
class Prediction:
    probability: float
    logits: tuple[float, float]


def predict(net: torch.nn.Module, model_input: np.ndarray, device: torch.device) -> Prediction:
    """Softmax over the two logits; the probability of recurrence is class 1.

    `model_input` is one sample (channels, *spatial), float32, as preprocessing produced it.
    """
    net.eval()
    batch = torch.from_numpy(np.ascontiguousarray(model_input, dtype=np.float32))[None].to(device)
    with torch.inference_mode():
        logits = net(batch)[0].float().cpu()
    probabilities = torch.softmax(logits, dim=0)
    return Prediction(probability=float(probabilities[1]), logits=(float(logits[0]), float(logits[1])))
