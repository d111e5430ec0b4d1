"""A node installed from a wheel has no repository config.yaml: the documented example travels inside the
package, `psma-node config example` prints it, and a missing configuration says how to start from it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from dicom_node.cli.main import cli
from dicom_node.config import DEFAULT_CONFIG_FILE, EXAMPLE_CONFIG_FILE, load_settings
from tests.support.node import REPO

SOURCES = ("pyproject.toml", "README.md", "dicom_node", "inference", "db")


def test_the_packaged_example_is_the_repository_config() -> None:
    assert EXAMPLE_CONFIG_FILE.read_bytes() == DEFAULT_CONFIG_FILE.read_bytes(), (
        "dicom_node/config.example.yaml differs from config.yaml: cp config.yaml dicom_node/config.example.yaml"
    )


def test_config_example_prints_a_configuration_the_node_accepts(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["config", "example"])
    assert result.exit_code == 0, result.output
    written = tmp_path / "config.yaml"
    written.write_text(result.output)
    assert written.read_bytes() == EXAMPLE_CONFIG_FILE.read_bytes()
    assert load_settings(written, environ={}).node.ae_title


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel` builds from a copy of the sources, unpacked as pip would install it."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work), "."],
        cwd=source, check=True, capture_output=True, timeout=300,
    )
    (wheel,) = work.glob("psma_node-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "dicom_node/config.example.yaml" in archive.namelist()
        assert "config.yaml" not in archive.namelist()
        archive.extractall(work / "site")
    return work / "site"


def _python(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Python with the unpacked wheel first on the path, away from the checkout and its config.yaml."""
    env = {key: value for key, value in os.environ.items() if key != "PSMA_NODE_CONFIG"}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _from_wheel(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return _python(site, cwd, "-m", "dicom_node.cli.main", *args)


def test_an_installed_wheel_prints_the_example_and_the_reference_without_any_config(
    installed_wheel: Path, tmp_path: Path
) -> None:
    where = _python(installed_wheel, tmp_path, "-c", "import dicom_node; print(dicom_node.__file__)")
    assert Path(where.stdout.strip()).is_relative_to(installed_wheel), where.stdout + where.stderr
    example = _from_wheel(installed_wheel, tmp_path, "config", "example")
    assert example.returncode == 0, example.stderr
    assert example.stdout == EXAMPLE_CONFIG_FILE.read_text(encoding="utf-8")
    reference = _from_wheel(installed_wheel, tmp_path, "config", "reference")
    assert reference.returncode == 0 and "models.device" in reference.stdout, reference.stderr

    missing = _from_wheel(installed_wheel, tmp_path, "config", "check")
    assert missing.returncode == 2
    assert "psma-node config example > config.yaml" in missing.stderr, missing.stderr
