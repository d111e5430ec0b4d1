"""Small synthetic PSMA PET/CT studies shared by the inference tests, generated once per session.

CT 128x128 and PET 64x64 on different grids (pixel size, slice step, field of view), 300 mm extent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from dicom_node.synth import SynthOptions, generate_study
from inference.network import build_network


@dataclass
class Study:
    root: Path
    truth: dict[str, Any]

    @property
    def pet_paths(self) -> list[Path]:
        return sorted((self.root / "PT").glob("*.dcm"))

    @property
    def ct_paths(self) -> list[Path]:
        return sorted((self.root / "CT").glob("*.dcm"))

    @property
    def prostate_or_bed(self) -> tuple[float, float, float]:
        center = self.truth["prostate_centroid_lps"] or self.truth["prostate_bed_centroid_lps"]
        return tuple(center)  # type: ignore[return-value]


def make_study(root: Path, **options: Any) -> Study:
    settings = {"ct_matrix": 128, "pet_matrix": 64, "extent_mm": 300.0, **options}
    generate_study(root, SynthOptions(**settings))
    return Study(root, json.loads((root / "ground_truth.json").read_text()))


@pytest.fixture(scope="session")
def recurrence_study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """Not operated, local recurrence in the prostate."""
    return make_study(tmp_path_factory.mktemp("recurrence"), seed=3, recurrence=True, prostatectomy=False)


@pytest.fixture(scope="session")
def bed_study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """Post-prostatectomy, recurrence in the prostate bed, no PSA in the headers."""
    return make_study(
        tmp_path_factory.mktemp("bed"),
        seed=5,
        recurrence=True,
        prostatectomy=True,
        write_clinical_history=False,
    )


@pytest.fixture(scope="session")
def negative_study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    """Not operated, no lesion: the hottest thing near the prostate must not be the bladder."""
    return make_study(
        tmp_path_factory.mktemp("negative"),
        seed=7,
        recurrence=False,
        prostatectomy=False,
        write_clinical_history=False,
    )


def write_random_checkpoint(path: Path, in_channels: int = 4, seed: int = 0, layout: str = "net") -> Path:
    """A randomly initialised DenseNet121 saved the way MONAI's CheckpointSaver does (or bare)."""
    torch.manual_seed(seed)
    net = build_network(in_channels)
    if layout == "net":
        content: Any = {"net": net.state_dict()}
    elif layout == "net+opt":
        content = {"net": net.state_dict(), "opt": torch.optim.Adam(net.parameters(), 1e-5).state_dict()}
    else:
        content = net.state_dict()
    torch.save(content, path)
    return path
