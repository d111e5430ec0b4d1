"""A 16-thread unauthenticated login flood against a real `serve` hashes passwords in the dashboard's own
process, not the receiver's, and a C-STORE of 175 instances meanwhile is barely slowed."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from dicom_node.web.auth import hash_password
from tests.dicom_node.receive.dicom_files import write_series
from tests.support.settings import PASSWORD
from tests.support.tools import require_tool

pytestmark = pytest.mark.slow
THREADS = 16
INSTANCES = 175


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def store(files: list[Path], port: int) -> float:
    started = time.monotonic()
    sent = subprocess.run(
        [require_tool("storescu"), "-aec", "PSMA_NODE", "127.0.0.1", str(port), *map(str, files)],
        capture_output=True, text=True, timeout=300,
    )
    assert sent.returncode == 0, sent.stderr
    return time.monotonic() - started


def flood(url: str, source: str, stop: threading.Event, answers: list[int]) -> None:
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(base_url=url, transport=transport, timeout=60) as client:
        while not stop.is_set():
            name = f"intruder-{uuid.uuid4().hex[:8]}"
            answers.append(client.post("/login", data={"username": name, "password": "guess"}).status_code)


def test_login_flood_hashes_in_the_dashboard_process_and_barely_slows_receiving(
    tmp_path: Path, node_factory
) -> None:
    node = node_factory({
        "workers": {"count": 0},
        "assembly": {"quiet_seconds": 3600, "ceiling_seconds": 3600},  # receiving only, no analysis
        "dashboard": {
            "enabled": True,
            "users": [{"name": "alice", "password_hash": hash_password(PASSWORD)}],  # full 600 000 rounds
        },
    })
    url = f"http://127.0.0.1:{node.config['dashboard']['port']}"

    def dashboard_pid() -> int | None:
        for line in node.log_text().splitlines():
            if '"dashboard process serving"' in line:
                return int(json.loads(line)["pid"])
        return None

    pid = node.wait_until(dashboard_pid, 60, "the dashboard process")
    assert node.proc is not None and pid != node.proc.pid
    baseline_files = write_series(tmp_path / "baseline", "CT", INSTANCES, size=128)
    flood_files = write_series(tmp_path / "flood", "CT", INSTANCES, size=128)

    serve_before = cpu_seconds(node.proc.pid)
    baseline = store(baseline_files, node.port)
    serve_baseline_cpu = cpu_seconds(node.proc.pid) - serve_before

    stop = threading.Event()
    answers: list[int] = []
    threads = [
        threading.Thread(target=flood, args=(url, f"127.0.1.{n + 1}", stop, answers), daemon=True)
        for n in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    node.wait_until(lambda: answers, 60, "the flood's first answer")  # under way before the transfer starts
    serve_before, dashboard_before = cpu_seconds(node.proc.pid), cpu_seconds(pid)
    flooded = store(flood_files, node.port)
    serve_flood_cpu = cpu_seconds(node.proc.pid) - serve_before
    dashboard_cpu = cpu_seconds(pid) - dashboard_before
    stop.set()
    for thread in threads:
        thread.join(60)

    print(f"C-STORE of {INSTANCES}: {baseline:.1f} s alone, {flooded:.1f} s under a {THREADS}-thread login "
          f"flood ({len(answers)} logins); CPU during the flood: serve {serve_flood_cpu:.1f} s "
          f"(alone {serve_baseline_cpu:.1f} s), dashboard {dashboard_cpu:.1f} s")
    assert set(answers) <= {401, 429} and 401 in answers
    assert dashboard_cpu >= 1.0, "the password hashing ran in the dashboard's process"
    assert serve_flood_cpu < 2 * serve_baseline_cpu + 1.0, "and not in the receiving process"
    assert flooded < 4 * baseline + 3.0, "generous: the machine's 2 cores are shared with other tests"
