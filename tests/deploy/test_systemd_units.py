"""The systemd units, sysusers.d and tmpfiles.d files parse with systemd's own tools and are hardened, and
psma-node.service's ExecStart runs, as its User with its Environment, and stops on SIGTERM within its grace."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.node import REPO, free_port

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


def _service_settings(name: str) -> dict[str, list[str]]:
    """Every `Key=value` of a unit's [Service] section (keys may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in (SYSTEMD / name).read_text().splitlines():
        if line.startswith("["):
            section = line.strip()
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def _logs(engine: Any, container: str) -> str:
    result = engine.docker("logs", container, check=False)
    return result.stdout + result.stderr


def test_service_runs_as_its_unit_says_and_stops_on_sigterm_within_the_grace(
        tmp_path: Path, engine: Any, node_image: str) -> None:
    """systemd cannot be PID 1 here; the image has the unit's layout (/opt/psma-node/venv, user psma-node,
    /var/lib/psma-node, /etc/psma-node), so the unit's ExecStart runs in it with the unit's User,
    WorkingDirectory, Environment and EnvironmentFile, and `docker stop -t TimeoutStopSec` does what
    `systemctl stop` does with KillMode=mixed: SIGTERM to the main process, SIGKILL after the timeout."""
    unit = _service_settings("psma-node.service")
    (exec_start,) = unit["ExecStart"]
    (user,) = unit["User"]
    (workdir,) = unit["WorkingDirectory"]
    (kill_mode,) = unit["KillMode"]
    grace = int(unit["TimeoutStopSec"][0])
    (env_file,) = [path.lstrip("-") for path in unit["EnvironmentFile"]]
    environment = dict(item.split("=", 1) for value in unit["Environment"] for item in value.split())
    assert kill_mode == "mixed" and workdir == f"/var/lib/{unit['StateDirectory'][0]}"

    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "node": {"ae_title": "PSMA_NODE", "bind": "127.0.0.1", "port": 104, "allow_any_calling_ae": True,
                 "min_free_disk_mb": 0},
        "storage": {"directory": "/var/lib/psma-node/storage", "results_directory": "/var/lib/psma-node/results"},
        "database": {"url": "sqlite:////var/lib/psma-node/psma-node.db"},
        "workers": {"count": 1}, "dashboard": {"enabled": False}, "logging": {"format": "json"},
    }))
    secrets = tmp_path / "env"
    secrets.write_text(f"PSMA_NODE_NODE__PORT={port}\n")  # proves EnvironmentFile is read: 104 would fail
    for path in (config, secrets):
        path.chmod(0o644)
    name = f"psma-node-unit-{uuid.uuid4().hex[:8]}"
    command = shlex.split(exec_start)
    engine.docker("run", "-d", "--name", name, "--network", "host", "--user", user, "--workdir", workdir,
                  *[arg for key, value in environment.items() for arg in ("-e", f"{key}={value}")],
                  "--env-file", str(secrets), "-v", f"{config}:{environment['PSMA_NODE_CONFIG']}:ro",
                  "-v", f"{secrets}:{env_file}:ro", "--entrypoint", command[0], node_image, *command[1:])
    try:
        deadline = time.monotonic() + 120
        while not all(f'"{event}"' in _logs(engine, name) for event in ("node started", "worker started")):
            assert time.monotonic() < deadline, _logs(engine, name)[-3000:]
            time.sleep(0.5)
        echo = subprocess.run([_tool("echoscu"), "-aec", "PSMA_NODE", "127.0.0.1", str(port)],
                              capture_output=True, text=True, timeout=30)
        assert echo.returncode == 0, echo.stderr
        started = time.monotonic()
        engine.docker("stop", "-t", str(grace), name, timeout=grace + 60)
        took = time.monotonic() - started
        state = json.loads(engine.docker("inspect", name).stdout)[0]["State"]
        logs = _logs(engine, name)
        assert state["ExitCode"] == 0, logs[-3000:]
        assert took < grace, f"SIGTERM took {took:.0f} s: systemd would have killed it after {grace} s"
        assert '"node stopped"' in logs and '"worker stopped"' in logs
    finally:
        engine.docker("rm", "-f", name, check=False)
