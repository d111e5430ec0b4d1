"""PET and CT are analysed together only in one Frame of Reference, unless the site explicitly opts in."""

# The study fixtures are imported from tests.inference.studies and received as test parameters.
# ruff: noqa: F401, F811

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from inference.analysis import AnalysisError, AnalysisOptions, analyse
from tests.inference.studies import Study, make_study


@pytest.fixture(scope="module")
def other_frame_study(tmp_path_factory: pytest.TempPathFactory) -> Study:
    study = make_study(tmp_path_factory.mktemp("frame"), seed=41, ct_matrix=64, pet_matrix=32, extent_mm=150)
    frame = generate_uid()
    for path in study.ct_paths:
        dataset = pydicom.dcmread(path)
        dataset.FrameOfReferenceUID = frame
        dataset.save_as(path)
    return study


def test_a_pair_in_different_frames_is_refused_at_the_read_stage(
    other_frame_study: Study, tmp_path: Path
) -> None:
    options = AnalysisOptions(models_dir=tmp_path / "none", gradcam=False)
    with pytest.raises(AnalysisError) as refused:
        analyse(other_frame_study.pet_paths, other_frame_study.ct_paths, options, center_lps=(0.0, 0.0, 0.0))
    assert refused.value.stage == "read"
    assert "PET and CT are in different Frames of Reference" in str(refused.value)


def test_the_opt_in_analyses_the_pair_and_the_result_says_so(
    other_frame_study: Study, tmp_path: Path
) -> None:
    options = AnalysisOptions(
        models_dir=tmp_path / "none", gradcam=False, allow_different_frame_of_reference=True
    )
    result = analyse(
        other_frame_study.pet_paths,
        other_frame_study.ct_paths,
        options,
        center_lps=other_frame_study.prostate_or_bed,
    )
    assert any(
        "different Frames of Reference" in w and "allow_different_frame_of_reference is on" in w
        for w in result.warnings
    )
