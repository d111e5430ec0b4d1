"""`psma-node analyze`: finds PET and CT in any folder layout and prints the result, offline."""

# The study fixtures are imported from tests.inference.studies and received as test parameters.
# ruff: noqa: F401, F811

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from click.testing import CliRunner

from dicom_node.cli.main import cli
from tests.inference.studies import Study, recurrence_study
from tests.support.node import REPO


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": {"models_dir": str(tmp_path / "models")},
                "database": {"url": f"sqlite:///{tmp_path / 'node.db'}"},
            }
        )
    )
    return path


def _scrambled(study: Study, target: Path) -> Path:
    """The study's files in one flat folder under meaningless names, plus a file that is not DICOM."""
    target.mkdir()
    for number, path in enumerate(sorted(study.pet_paths + study.ct_paths, key=lambda p: p.name[::-1])):
        shutil.copy(path, target / f"IM{number:05d}")
    (target / "README.txt").write_text("not an image")
    return target


def test_json_result_from_a_flat_folder_with_given_clinical_values(
    recurrence_study: Study,
    tmp_path: Path,
) -> None:
    folder = _scrambled(recurrence_study, tmp_path / "flat")
    dump = tmp_path / "input.npy"
    center = ",".join(str(v) for v in recurrence_study.prostate_or_bed)
    outcome = CliRunner().invoke(
        cli,
        [
            "--config",
            str(_config(tmp_path)),
            "analyze",
            str(folder),
            f"--center-lps={center}",
            "--psa",
            "4.5",
            "--prostatectomy",
            "yes",
            "--json",
            "--dump-input",
            str(dump),
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    summary = json.loads(outcome.stdout)
    assert summary["finding"] == "undetermined" and summary["probability"] is None
    assert "zenodo.15174580" in summary["classifier_note"]
    assert summary["psa"] == {"value": 4.5, "source": "given", "detail": "given on the command line"}
    assert summary["prostatectomy"]["value"] is True and summary["prostatectomy"]["source"] == "given"
    assert summary["localisation"]["organ"] == "given"
    assert summary["pet_series_uid"] == recurrence_study.truth["pet_series_uid"]
    assert summary["quantification"]["suv_max"] > 0
    assert any("not DICOM" in warning for warning in summary["warnings"])
    tensor = np.load(dump)
    assert tensor.dtype == np.float32 and tensor.shape == (4, 65, 46, 69)
    assert np.all(tensor[2] == np.float32(4.5 / 7434)) and np.all(tensor[3] == 1.0)


def test_a_folder_without_pet_is_a_clear_error(recurrence_study: Study, tmp_path: Path) -> None:
    only_ct = tmp_path / "ct"
    shutil.copytree(recurrence_study.root / "CT", only_ct)
    outcome = CliRunner().invoke(cli, ["--config", str(_config(tmp_path)), "analyze", str(only_ct)])
    assert outcome.exit_code == 1
    assert "no PET (modality PT) series" in outcome.output and "CT x1" in outcome.output


def test_a_bad_centre_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    outcome = CliRunner().invoke(
        cli, ["--config", str(_config(tmp_path)), "analyze", str(tmp_path), "--center-lps", "1,2"]
    )
    assert outcome.exit_code == 2 and "X,Y,Z" in outcome.output


def test_the_installed_command_prints_the_banner_and_uses_the_localiser(
    recurrence_study: Study,
    tmp_path: Path,
) -> None:
    command = [
        str(Path(sys.executable).parent / "psma-node"),
        "--config",
        str(_config(tmp_path)),
        "analyze",
        str(recurrence_study.root),
    ]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "PSMA_NODE_LOGGING__LEVEL": "ERROR"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("AI RESULT - RESEARCH SOFTWARE - NOT FOR DIAGNOSTIC USE")
    assert "Local recurrence: UNDETERMINED" in done.stdout
    assert "(prostate, " in done.stdout
    assert "SUVmax" in done.stdout
