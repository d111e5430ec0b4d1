"""`psma-node doctor`: a good site passes, and each broken part is named with its fix.

Peers are real programs (dcmtk storescp as PACS or as "the running node", PostgreSQL); the weights are
small artefacts the test makes, imported with the real checkpoint code.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from db.session import upgrade
from dicom_node.cli.main import cli
from dicom_node.config import load_settings
from dicom_node.doctor import CheckResult, Status, run_checks
from inference.checkpoints import import_checkpoint
from inference.model_specs import get_spec
from inference.network import build_network
from tests.support.db import migrate
from tests.support.node import deep_merge, free_port, wait_for_port, write_config
from tests.support.tools import require_tool


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Model D imported by the real import code from a checkpoint of the right architecture."""
    work = tmp_path_factory.mktemp("models")
    checkpoint = work / "checkpoint_epoch=4.pt"
    torch.save({"net": build_network(4).state_dict()}, checkpoint)
    import_checkpoint(checkpoint, get_spec("D"), work / "models")
    return work / "models"


class Storescp:
    """A dcmtk storescp answering C-ECHO on a free port (stands in for a PACS or a running node)."""

    def __init__(self, ae_title: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.received = Path(tempfile.mkdtemp(prefix="storescp-"))
        self.proc = subprocess.Popen(
            [require_tool("storescp"), "-aet", ae_title, "--output-directory", str(self.received),
             str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "TCP_NODELAY": "1"},
        )
        wait_for_port(self.port, timeout=10)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.received, ignore_errors=True)


@pytest.fixture
def pacs() -> Iterator[Storescp]:
    peer = Storescp("ORTHANC")
    yield peer
    peer.stop()


def _config(tmp_path: Path, models_dir: Path, overrides: dict[str, Any] | None = None,
            migrated: bool = True) -> Path:
    base: dict[str, Any] = {
        "models": {"models_dir": str(models_dir)},
        "database": {"auto_upgrade": False},
        "logging": {"file": None},
    }
    path = write_config(tmp_path / "site", deep_merge(base, overrides or {}))
    if migrated:
        migrate(load_settings(path, environ={}).database.url.get_secret_value())  # SQLite: a template copy
    return path


def _doctor(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(config), "doctor", "--timeout", "1"])
    return result.exit_code, result.output


def _by_name(results: list[CheckResult]) -> dict[str, CheckResult]:
    return {result.name: result for result in results}


def _checks(config: Path) -> dict[str, CheckResult]:
    return _by_name(run_checks(load_settings(config, environ={}), timeout=1.0))


def test_good_site_prints_ok_lines_and_exits_0(tmp_path: Path, models_dir: Path, pacs: Storescp) -> None:
    destination = {"name": "pacs", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
                   "port": pacs.port}
    config = _config(tmp_path, models_dir, {"results": {"destinations": [destination]}})
    code, output = _doctor(config)
    assert code == 0, output
    for line in ("OK    dicom port: port", "OK    storage.directory:", "OK    storage.results_directory:",
                 "OK    database:", "OK    destination pacs: ORTHANC@127.0.0.1", "OK    model D:",
                 "OK    device:"):
        assert line in output, output
    assert output.splitlines()[-1].startswith("0 FAIL"), output
    assert "WARN  totalsegmentator" in output  # absent, but localizer.kind is anatomical


def test_port_held_by_another_program_fails_with_hint(tmp_path: Path, models_dir: Path) -> None:
    config = _config(tmp_path, models_dir)
    port = load_settings(config, environ={}).node.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen(1)
        code, output = _doctor(config)
    assert code == 1
    line = next(line for line in output.splitlines() if line.startswith("FAIL  dicom port"))
    assert f"port {port} on 127.0.0.1 is in use by another program" in line
    assert "fix:" in line and "node.port" in line


def test_running_node_is_echoed_through_its_allow_list_and_its_dashboard_answers(
    node_factory: Any, models_dir: Path
) -> None:
    node = node_factory({
        "node": {"allow_any_calling_ae": False, "allowed_calling_aes": [{"ae_title": "SITEPACS"}]},
        "dashboard": {"enabled": True, "bind": "127.0.0.1"},
        "workers": {"count": 0},
        "models": {"models_dir": str(models_dir)},
    })
    checks = _checks(node.config_path)
    assert checks["dicom port"].status is Status.OK, checks["dicom port"]
    assert "answering C-ECHO as PSMA_NODE (the node is already running)" in checks["dicom port"].message
    assert checks["dashboard port"].status is Status.OK, checks["dashboard port"]
    assert "in use by the running node" in checks["dashboard port"].message


def test_unwritable_storage_fails_naming_the_folder(tmp_path: Path, models_dir: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder's parent should be")
    config = _config(tmp_path, models_dir, {"storage": {"directory": str(blocker / "storage")}})
    code, output = _doctor(config)
    assert code == 1
    line = next(line for line in output.splitlines() if line.startswith("FAIL  storage.directory"))
    assert str(blocker / "storage") in line and "fix:" in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_storage_fails(tmp_path: Path, models_dir: Path) -> None:
    storage = tmp_path / "ro"
    storage.mkdir()
    storage.chmod(0o500)
    try:
        check = _checks(_config(tmp_path, models_dir, {"storage": {"directory": str(storage)}}))
    finally:
        storage.chmod(0o700)
    assert check["storage.directory"].status is Status.FAIL
    assert "not writable" in check["storage.directory"].message


def test_too_little_free_disk_fails(tmp_path: Path, models_dir: Path) -> None:
    check = _checks(_config(tmp_path, models_dir, {"node": {"min_free_disk_mb": 10**12}}))
    assert check["storage.directory"].status is Status.FAIL
    assert "node.min_free_disk_mb" in check["storage.directory"].message


def test_destination_that_is_down_fails_naming_it(tmp_path: Path, models_dir: Path, pacs: Storescp) -> None:
    down_port = free_port()
    destinations = [
        {"name": "pacs", "ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs.port},
        {"name": "archive", "ae_title": "ARCHIVE", "host": "127.0.0.1", "port": down_port},
    ]
    code, output = _doctor(_config(tmp_path, models_dir, {"results": {"destinations": destinations}}))
    assert code == 1
    assert "OK    destination pacs" in output
    line = next(line for line in output.splitlines() if line.startswith("FAIL  destination archive"))
    assert f"ARCHIVE@127.0.0.1:{down_port} did not answer C-ECHO: connection refused" in line
    assert "fix:" in line


def test_destination_that_is_not_dicom_fails(tmp_path: Path, models_dir: Path) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        destination = {"name": "mute", "ae_title": "MUTE", "host": "127.0.0.1", "port": port}
        check = _checks(_config(tmp_path, models_dir, {"results": {"destinations": [destination]}}))
    assert check["destination mute"].status is Status.FAIL
    assert "did not answer" in check["destination mute"].message


def _empty_database(db_url: str) -> None:
    engine = create_engine(db_url)
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    engine.dispose()


def test_unmigrated_database_fails_with_upgrade_command(
    tmp_path: Path, models_dir: Path, db_url: str
) -> None:
    _empty_database(db_url)
    config = _config(tmp_path, models_dir, {"database": {"url": db_url}}, migrated=False)
    code, output = _doctor(config)
    assert code == 1
    line = next(line for line in output.splitlines() if line.startswith("FAIL  database"))
    assert "has no schema" in line and "psma-node db upgrade" in line


def test_unmigrated_database_is_a_warning_when_serve_upgrades_it(
    tmp_path: Path, models_dir: Path, db_url: str
) -> None:
    _empty_database(db_url)
    database = {"url": db_url, "auto_upgrade": True}
    config = _config(tmp_path, models_dir, {"database": database}, migrated=False)
    assert _checks(config)["database"].status is Status.WARN
    upgrade(db_url)
    check = _checks(config)["database"]
    assert check.status is Status.OK and "(current)" in check.message


def test_unreachable_postgres_fails_without_showing_the_password(tmp_path: Path, models_dir: Path) -> None:
    url = f"postgresql+psycopg2://psma:s3cret@127.0.0.1:{free_port()}/psma"
    check = _checks(_config(tmp_path, models_dir, {"database": {"url": url}}, migrated=False))["database"]
    assert check.status is Status.FAIL
    assert "cannot open" in check.message and "s3cret" not in check.message


def test_changed_model_weights_fail(tmp_path: Path, models_dir: Path) -> None:
    tampered = tmp_path / "models"
    shutil.copytree(models_dir, tampered)
    with open(tampered / "D" / "model_D.pt", "r+b") as handle:
        handle.seek(-8, os.SEEK_END)
        handle.write(b"\x00" * 8)
    check = _checks(_config(tmp_path, tampered))["model D"]
    assert check.status is Status.FAIL and "changed since import" in check.message


def test_missing_model_weights_fail_with_import_command(tmp_path: Path) -> None:
    check = _checks(_config(tmp_path, tmp_path / "no-models"))["model D"]
    assert check.status is Status.FAIL
    assert "psma-node models import FILE --as D" in check.fix


def _totalsegmentator_install(root: Path, fast: bool = False) -> tuple[Path, Path]:
    """An executable and a TOTALSEG_HOME_DIR laid out like TotalSegmentator 2.x, with a SHA256SUMS."""
    executable = root / "bin" / "TotalSegmentator"
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\nexit 0\n")
    executable.chmod(0o755)
    home = root / "totalseg"
    folders = {291: "Dataset291_TotalSegmentator_part1_organs_1559subj",
               297: "Dataset297_TotalSegmentator_total_3mm_1559subj",
               298: "Dataset298_TotalSegmentator_total_6mm_1559subj"}
    for task in ((297, 298) if fast else (291, 298)):
        trainer = home / "nnunet" / "results" / folders[task] / "nnUNetTrainer__nnUNetPlans__3d_fullres"
        fold = trainer / "fold_0"
        fold.mkdir(parents=True)
        (fold / "checkpoint_final.pth").write_bytes(os.urandom(256))
        (trainer / "plans.json").write_text("{}")
    # the manifest exactly as docs/totalsegmentator-offline.md writes it
    subprocess.run("find nnunet -type f -print0 | sort -z | xargs -0 sha256sum > SHA256SUMS",
                   shell=True, cwd=home, check=True)
    return executable, home


def test_totalsegmentator_absent_is_a_warning_for_the_anatomical_localizer(
    tmp_path: Path, models_dir: Path
) -> None:
    localizer = {"kind": "anatomical", "totalsegmentator_command": "no-such-TotalSegmentator"}
    check = _checks(_config(tmp_path, models_dir, {"localizer": localizer}))["totalsegmentator"]
    assert check.status is Status.WARN and "not found on PATH" in check.message


def test_totalsegmentator_absent_fails_when_it_is_the_localizer(tmp_path: Path, models_dir: Path) -> None:
    executable, home = _totalsegmentator_install(tmp_path)
    shutil.rmtree(home / "nnunet" / "results" / "Dataset298_TotalSegmentator_total_6mm_1559subj")
    localizer = {"kind": "totalsegmentator", "totalsegmentator_command": str(executable),
                 "totalsegmentator_home": str(home)}
    check = _checks(_config(tmp_path, models_dir, {"localizer": localizer}))["totalsegmentator"]
    assert check.status is Status.FAIL and "Dataset298_*" in check.message


@pytest.mark.parametrize("fast", [False, True], ids=["1.5mm", "fast-3mm"])
def test_totalsegmentator_weights_verified_against_manifest(
    tmp_path: Path, models_dir: Path, fast: bool
) -> None:
    executable, home = _totalsegmentator_install(tmp_path, fast)
    localizer = {"kind": "totalsegmentator", "totalsegmentator_command": str(executable),
                 "totalsegmentator_home": str(home), "totalsegmentator_fast": fast}
    config = _config(tmp_path, models_dir, {"localizer": localizer})
    check = _checks(config)["totalsegmentator"]
    assert check.status is Status.OK and "verified against" in check.message
    next(home.rglob("checkpoint_final.pth")).write_bytes(b"truncated")
    check = _checks(config)["totalsegmentator"]
    assert check.status is Status.FAIL and "differs from its sha256" in check.message
