"""The published network (MONAI DenseNet121, 3-D), the compute device, and a deterministic forward pass."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.networks.nets import DenseNet121


class DeviceError(RuntimeError):
    """The configured device cannot be used here; the message names the setting and the fix."""


def resolve_device(requested: str) -> torch.device:
    """The one device rule of the node, from `models.device` to the device inference runs on.

    - "cpu": the CPU, always.
    - "auto": CUDA when torch sees a CUDA device, else the CPU (never an error).
    - "cuda": CUDA, or DeviceError when this machine has none; never a silent fall back to the CPU,
      because a site that asked for a GPU sized its throughput on one.

    Every entry point that runs or checks inference (`serve` and `worker` before starting workers,
    each worker process, `analyze`, `doctor`) calls this once and passes the result on.
    """
    if requested == "cpu":
        return torch.device("cpu")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda":
        if torch.cuda.is_available():
            return torch.device("cuda")
        why = "torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise DeviceError(
            f"models.device is 'cuda' but this machine has no CUDA device ({why}); "
            "set models.device: auto or cpu"
        )
    raise DeviceError(f"models.device is {requested!r}: expected auto, cpu or cuda")


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
