"""Start a real `psma-node serve` in a subprocess on free ports, with a config written for the test."""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from tests.support.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


# Ports for the servers tests start come from below the kernel's ephemeral range (32768-60999 on Linux,
# where every outgoing connection takes its source port) and from a slice of their own per pytest-xdist
# worker: a port the kernel handed out as "free" could otherwise be taken by another connection, or by the
# other worker's next server, between the test choosing it and its server binding it.
_FIRST_PORT = 20_000
_PORTS_PER_WORKER = 2_000
_SLICES = 6  # 20000-31999


def _worker_slice() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # absent outside xdist (one process, slice 0)
    return int(worker[2:]) % _SLICES if worker[2:].isdigit() else 0


_next_offset = itertools.count(random.randrange(_PORTS_PER_WORKER))


def free_port() -> int:
    """A port of this process's slice that nothing listens on (each call gives another one)."""
    base = _FIRST_PORT + _worker_slice() * _PORTS_PER_WORKER
    for _ in range(_PORTS_PER_WORKER):
        port = base + next(_next_offset) % _PORTS_PER_WORKER
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in {base}-{base + _PORTS_PER_WORKER - 1}")


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout} s")


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def write_config(directory: Path, overrides: dict[str, Any] | None = None, db_url: str | None = None) -> Path:
    """A config for tests: everything under `directory`, free ports, quick timings, any caller allowed.

    One receiving process (production's "auto" starts one per core): every node test goes through the
    hand-over to a receiving process, at the start-up cost of one; test_receiving_processes.py runs two."""
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "node": {"ae_title": "PSMA_NODE", "bind": "127.0.0.1", "port": free_port(),
                 "allow_any_calling_ae": True, "min_free_disk_mb": 0, "receiving_processes": 1},
        "storage": {"directory": str(directory / "storage"), "results_directory": str(directory / "results")},
        "database": {"url": db_url or f"sqlite:///{directory / 'node.db'}"},
        "workers": {"count": 1, "lease_seconds": 10},
        "models": {"models_dir": str(directory / "models")},
        "dashboard": {"enabled": False, "port": free_port()},
        "logging": {"format": "json", "level": "INFO", "file": str(directory / "node.log")},
    }
    config = deep_merge(config, overrides or {})
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class NodeProcess:
    """A `psma-node serve` subprocess; stop() (or kill()) always reaps it."""

    def __init__(self, config_path: Path, extra_env: dict[str, str] | None = None) -> None:
        self.config_path = config_path
        self.config = yaml.safe_load(config_path.read_text())
        self.port = int(self.config["node"]["port"])
        self.env = {**os.environ, **(extra_env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = config_path.parent / "serve.stderr"

    def start(self, timeout: float = 60.0) -> "NodeProcess":
        if self.proc is not None and self.proc.poll() is None:
            # `with node.start():` would start a second serve and stop only that one, leaking the first.
            raise RuntimeError("node already running: use `with node:` or call start() once")
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dicom_node.cli.main", "--config", str(self.config_path), "serve"],
            stdout=self._stderr, stderr=self._stderr, env=self.env, cwd=str(REPO),
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}:\n{self.log_text()}")
            try:
                wait_for_port(self.port, timeout=0.5)
                return self
            except TimeoutError:
                continue
        self.kill()
        raise TimeoutError(f"node did not listen on {self.port}:\n{self.log_text()}")

    def wait_until(self, check: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll `check` until it returns something truthy; on timeout fail with the node's recent log."""
        return wait_for(check, timeout=timeout, what=what, log=self.log_text)

    def log_text(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._reap_group()

    def kill(self) -> None:
        """SIGKILL the node and everything it started (its worker processes)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        self._reap_group()

    def _reap_group(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._stderr.close()

    def __enter__(self) -> "NodeProcess":
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
