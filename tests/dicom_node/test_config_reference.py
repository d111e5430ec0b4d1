"""The configuration reference is generated from the typed config and the committed copy matches it."""

from __future__ import annotations

import subprocess
import sys

from dicom_node.config import Settings
from dicom_node.config_reference import REGENERATE_COMMAND, reference_entries, render_reference
from tests.support.node import REPO

COMMITTED = REPO / "docs" / "configuration.md"


def _leaf_keys(model: type, prefix: str = "") -> list[str]:
    found: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            found += _leaf_keys(annotation, f"{prefix}{name}.")
        else:
            found.append(prefix + name)
    return found


def test_committed_reference_matches_the_typed_config() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render_reference(), (
        f"docs/configuration.md is out of date: run `{REGENERATE_COMMAND}`"
    )


def test_every_key_appears_with_its_default_and_meaning() -> None:
    documented = {doc.key: doc for docs in reference_entries().values() for doc in docs}
    for key in _leaf_keys(Settings):
        assert key in documented, f"{key} missing from the reference"
    assert documented["node.port"].default == "`11112`"
    assert "≥ 1" in documented["node.port"].type and "≤ 65535" in documented["node.port"].type
    assert documented["localizer.kind"].type == "one of `anatomical`, `totalsegmentator`"
    assert documented["results.destinations[].ae_title"].meaning == "Called AE title (dicom)."
    assert documented["node.allowed_calling_aes[].ae_title"].default == "*required*"
    assert documented["dashboard.session_secret"].type == "secret string"


def test_reference_command_prints_markdown_without_needing_a_valid_config(tmp_path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("node: {port: nope}\n")
    result = subprocess.run(
        [sys.executable, "-m", "dicom_node.cli.main", "--config", str(broken), "config", "reference"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_reference()
    assert "| `database.url` | secret string |" in result.stdout
