"""The example configurations in deploy/config validate with `psma-node config check` as shipped."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dicom_node.config import load_settings
from tests.support.node import REPO

CONFIGS = sorted((REPO / "deploy" / "config").glob("*.yaml"))


def _config_check(path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PSMA_NODE_")}
    return subprocess.run(
        [sys.executable, "-m", "dicom_node.cli.main", "--config", str(path), "config", "check"],
        capture_output=True, text=True, timeout=60, env={**environ, **(env or {})},
    )


def test_the_documented_examples_exist() -> None:
    names = {path.name for path in CONFIGS}
    assert {"single-box-sqlite.yaml", "multi-worker-postgres.yaml", "compose-demo.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_passes_config_check(path: Path) -> None:
    result = _config_check(path)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stderr


def test_secrets_come_from_the_environment_as_documented() -> None:
    """The multi-worker example keeps the password out of the file: the env override supplies it."""
    path = REPO / "deploy" / "config" / "multi-worker-postgres.yaml"
    url = "postgresql+psycopg2://psma:secret-pw@db.example.org:5432/psma"
    result = _config_check(path, {"PSMA_NODE_DATABASE__URL": url, "PSMA_NODE_WORKERS__COUNT": "0"})
    assert result.returncode == 0, result.stderr
    assert "secret-pw" not in result.stdout
    settings = load_settings(path, environ={"PSMA_NODE_DATABASE__URL": url, "PSMA_NODE_WORKERS__COUNT": "0"})
    assert settings.database.url.get_secret_value() == url and settings.workers.count == 0


def test_single_box_keeps_all_state_under_the_units_state_directory() -> None:
    settings = load_settings(REPO / "deploy" / "config" / "single-box-sqlite.yaml", environ={})
    state = Path("/var/lib/psma-node")
    for path in (settings.storage.directory, settings.storage.results_directory, settings.models.models_dir):
        assert state in path.parents
    assert settings.database.url.get_secret_value() == "sqlite:////var/lib/psma-node/psma-node.db"


def test_examples_say_research_use_only() -> None:
    for path in CONFIGS:
        assert "not for diagnostic use" in path.read_text(), path.name
        assert isinstance(yaml.safe_load(path.read_text()), dict)
