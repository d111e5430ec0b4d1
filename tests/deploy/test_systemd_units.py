"""The systemd units, sysusers.d and tmpfiles.d files parse with systemd's own tools and are hardened."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.node import REPO

SYSTEMD = REPO / "deploy" / "systemd"
INSTALLED_BINARY = "/opt/psma-node/venv/bin/psma-node"
UNITS = {"psma-node.service": "psma-node.service", "psma-node-worker@.service": "psma-node-worker@1.service"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed: cannot check the systemd files")
    return path


def _unit_copy(tmp_path: Path, name: str, instance: str) -> Path:
    """The unit with ExecStart pointing at an existing executable (the install path does not exist here)."""
    fake = tmp_path / "bin" / "psma-node"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    text = (SYSTEMD / name).read_text()
    assert INSTALLED_BINARY in text
    copy = tmp_path / instance
    copy.write_text(text.replace(INSTALLED_BINARY, str(fake)))
    return copy


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_verifies_without_diagnostics(tmp_path: Path, name: str) -> None:
    unit = _unit_copy(tmp_path, name, UNITS[name])
    result = subprocess.run([_tool("systemd-analyze"), "verify", str(unit)],
                            capture_output=True, text=True, timeout=60)
    # systemd-analyze exits 0 on unknown keys and unparsable values; it reports them as "<file>:<line>: ...".
    diagnostics = [line for line in result.stderr.splitlines()
                   if line.startswith(f"{unit}:") or "Unknown section" in line or "Failed to" in line]
    assert result.returncode == 0 and diagnostics == [], result.stderr


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_runs_unprivileged_and_hardened(tmp_path: Path, name: str) -> None:
    text = (SYSTEMD / name).read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", text, flags=re.MULTILINE))
    assert settings["User"] == "psma-node" and settings["Restart"] == "on-failure"
    assert settings["NoNewPrivileges"] == "yes" and settings["ProtectSystem"] == "strict"
    assert settings["ReadWritePaths"] == "/var/lib/psma-node" and settings["CapabilityBoundingSet"] == ""
    assert settings["PrivateTmp"] == "yes" and settings["ProtectHome"] == "yes"
    unit = _unit_copy(tmp_path, name, UNITS[name])
    result = subprocess.run(
        [_tool("systemd-analyze"), "security", "--offline=yes", "--threshold=25", str(unit)],
        capture_output=True, text=True, timeout=60,
    )
    exposure = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert result.returncode == 0 and exposure is not None, result.stdout[-2000:] + result.stderr
    assert float(exposure.group(1)) <= 2.5


def test_sysusers_and_tmpfiles_create_user_and_state_folders(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        (root / "etc" / name).touch()
    subprocess.run([_tool("systemd-sysusers"), f"--root={root}", str(SYSTEMD / "psma-node.sysusers.conf")],
                   check=True, capture_output=True, timeout=60)
    passwd = {line.split(":")[0]: line.split(":") for line in (root / "etc/passwd").read_text().splitlines()}
    user = passwd["psma-node"]
    assert user[5] == "/var/lib/psma-node" and user[6] == "/usr/sbin/nologin"
    tmpfiles = SYSTEMD / "psma-node.tmpfiles.conf"
    subprocess.run([_tool("systemd-tmpfiles"), "--create", f"--root={root}", str(tmpfiles)],
                   check=True, capture_output=True, timeout=60)
    for folder in ("var/lib/psma-node", "var/lib/psma-node/storage", "var/lib/psma-node/results",
                   "var/lib/psma-node/models"):
        info = (root / folder).stat()
        assert info.st_uid == int(user[2]) and oct(info.st_mode & 0o777) == "0o750", folder
    config_dir = (root / "etc/psma-node").stat()
    assert config_dir.st_uid == 0 and config_dir.st_gid == int(user[3])
