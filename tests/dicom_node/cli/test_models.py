"""`psma-node models list|import|verify` on checkpoints the test writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from click.testing import CliRunner

from dicom_node.cli.main import cli
from tests.inference.studies import write_random_checkpoint


def _config(tmp_path: Path, **models: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"models": {"models_dir": str(tmp_path / "models"), **models}}))
    return path


def _run(config: Path, *args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["--config", str(config), "models", *args])


def test_import_then_list_and_verify(tmp_path: Path) -> None:
    config = _config(tmp_path)
    source = write_random_checkpoint(tmp_path / "checkpoint_epoch=4.pt", layout="net+opt")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    imported = _run(config, "import", str(source), "--as", "d")
    assert imported.exit_code == 0, imported.output
    assert "as model D" in imported.output and digest in imported.output
    listed = _run(config, "list")
    assert listed.exit_code == 0
    assert f"D (default): installed model_D.pt sha256 {digest}" in listed.output
    assert "C: not installed" in listed.output
    verified = _run(config, "verify")
    assert verified.exit_code == 0, verified.output
    assert f"D: OK sha256 {digest}" in verified.output


def test_verify_fails_when_the_configured_sha256_differs(tmp_path: Path) -> None:
    source = write_random_checkpoint(tmp_path / "d.pt")
    assert _run(_config(tmp_path), "import", str(source), "--as", "D").exit_code == 0
    outcome = _run(_config(tmp_path, expected_sha256={"D": "a" * 64}), "verify")
    assert outcome.exit_code == 1
    assert "D: FAILED" in outcome.output and "expected " + "a" * 64 in outcome.output


def test_missing_weights_explain_where_to_get_them(tmp_path: Path) -> None:
    outcome = _run(_config(tmp_path), "verify")
    assert outcome.exit_code == 1
    assert "D: MISSING" in outcome.output
    assert "doi:10.5281/zenodo.15174580" in outcome.output
    assert "psma-node models import FILE --as D" in outcome.output


def test_import_refuses_a_broken_file_and_installs_nothing(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 truncated")
    outcome = _run(_config(tmp_path), "import", str(broken), "--as", "D")
    assert outcome.exit_code == 1
    assert "corrupt or not a torch checkpoint" in outcome.output
    assert not (tmp_path / "models" / "D").exists()
    wrong = write_random_checkpoint(tmp_path / "b.pt", in_channels=2)
    outcome = _run(_config(tmp_path), "import", str(wrong), "--as", "C")
    assert outcome.exit_code == 1 and "does not fit model C" in outcome.output
