"""Small synthetic studies shared by the synth tests (generated once per session: ~0.3 s each)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dicom_node.synth import GroundTruth, SynthOptions, generate_study

StudyMaker = Callable[..., tuple[Path, GroundTruth]]
SMALL = {"ct_matrix": 128, "pet_matrix": 64, "extent_mm": 200.0}


@pytest.fixture(scope="session")
def small_study(tmp_path_factory: pytest.TempPathFactory) -> StudyMaker:
    """`small_study(**options)` -> (folder, ground truth); identical requests share one folder."""
    cache: dict[str, tuple[Path, GroundTruth]] = {}

    def make(**overrides: object) -> tuple[Path, GroundTruth]:
        options = SynthOptions(**{**SMALL, **overrides})  # type: ignore[arg-type]
        key = repr(options)
        if key not in cache:
            folder = tmp_path_factory.mktemp("synth")
            cache[key] = (folder, generate_study(folder, options))
        return cache[key]

    return make
