"""`psma-node synth`: help, a small study, and --send to a real dcmtk storescp."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dicom_node.cli.main import cli
from dicom_node.synth import SynthOptions, generate_study
from dicom_node.synth.transmit import send_files, study_files
from tests.support.node import free_port, wait_for_port
from tests.support.tools import require_tool

SMALL_ARGS = ["--ct-matrix", "96", "--pet-matrix", "48", "--extent-mm", "200"]


def _run(*args: str) -> Result:
    return CliRunner().invoke(cli, ["synth", *args])


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A real dcmtk storescp on a free port (uncompressed syntaxes only), stopped afterwards."""
    binary = require_tool("storescp")
    port = free_port()
    received = tmp_path / "received"
    received.mkdir()
    process = subprocess.Popen([binary, "-od", str(received), str(port)],
                               env={**os.environ, "TCP_NODELAY": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=10)
        yield port, received
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_help_lists_every_option() -> None:
    result = CliRunner().invoke(cli, ["synth", "--help"])
    assert result.exit_code == 0
    for option in ("--seed", "--recurrence", "--prostatectomy", "--psa", "--ct-matrix", "--pet-matrix",
                   "--extent-mm", "--ct-slice-mm", "--pet-slice-mm", "--vendor", "--transfer-syntax",
                   "--tracer",
                   "--nodal-lesions", "--send", "--aet", "--calling-aet"):
        assert option in result.output


def test_cli_writes_a_small_study(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "s"), *SMALL_ARGS, "--seed", "5",
                                      "--vendor", "ge",
                                      "--prostatectomy", "--no-recurrence", "--tracer", "DCFPyL"])
    assert result.exit_code == 0, result.output
    truth = json.loads((tmp_path / "s" / "ground_truth.json").read_text())
    assert truth["vendor"] == "ge" and truth["prostatectomy"] and not truth["recurrence"]
    assert truth["tracer"] == "DCFPyL" and truth["seed"] == 5
    assert f"wrote {truth['n_ct_files']} CT + {truth['n_pet_files']} PET files" in result.output
    assert len(list((tmp_path / "s" / "CT").glob("*.dcm"))) == truth["n_ct_files"]


def test_cli_refuses_bad_values_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "s"), "--extent-mm", "50"])
    assert result.exit_code == 2 and "extent_mm" in result.output
    result = CliRunner().invoke(cli, ["synth", str(tmp_path / "s"), "--send", "nohostport"])
    assert result.exit_code == 2 and "HOST:PORT" in result.output


def test_send_stores_every_instance_in_storescp(tmp_path: Path, storescp: tuple[int, Path]) -> None:
    port, received = storescp
    result = _run(str(tmp_path / "s"), *SMALL_ARGS, "--send", f"127.0.0.1:{port}", "--aet", "STORESCP")
    assert result.exit_code == 0, result.stderr
    truth = json.loads((tmp_path / "s" / "ground_truth.json").read_text())
    total = truth["n_ct_files"] + truth["n_pet_files"]
    assert f"sent {total}/{total} instances" in result.stdout
    assert len(list(received.iterdir())) == total


def test_send_to_a_peer_refusing_the_transfer_syntax_fails_clearly(tmp_path: Path,
                                                                  storescp: tuple[int, Path]) -> None:
    port, received = storescp
    result = _run(str(tmp_path / "s"), *SMALL_ARGS, "--transfer-syntax", "rle", "--send", f"127.0.0.1:{port}")
    assert result.exit_code == 1
    assert "accepted none of the presentation contexts" in result.stderr
    assert list(received.iterdir()) == []


def test_send_to_a_down_peer_exits_non_zero(tmp_path: Path) -> None:
    result = _run(str(tmp_path / "s"), *SMALL_ARGS, "--send", f"127.0.0.1:{free_port()}", "--aet", "NOBODY")
    assert result.exit_code == 1
    assert "cannot associate with NOBODY@127.0.0.1" in result.stderr and "connection refused" in result.stderr


def test_send_reports_progress_once_per_file(tmp_path: Path, storescp: tuple[int, Path]) -> None:
    port, _ = storescp
    generate_study(tmp_path / "s", SynthOptions(ct_matrix=96, pet_matrix=48, extent_mm=200))
    files = study_files(tmp_path / "s")
    ticks: list[int] = []
    report = send_files(files, "127.0.0.1", port, "STORESCP", on_sent=lambda: ticks.append(1))
    assert report.ok
    assert len(ticks) == len(files) == report.sent
