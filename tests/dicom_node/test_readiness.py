"""Readiness through a real node: /healthz stays liveness, /readyz, `doctor` and the timeline say that a study
waits for a worker until one has warmed up, and `serve` logs once when the node becomes ready.

The node runs without workers of its own and a `psma-node worker` process is started later on the same
database, so that "before a worker is ready" lasts as long as the test needs, not as long as an import.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from db.models import AuditEvent, Study
from db.session import make_engine, make_session_factory
from tests.dicom_node.assemble.test_node_assembly import send, synth
from tests.support.node import REPO, free_port

pytestmark = pytest.mark.slow


def _cli(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "dicom_node.cli.main", "--config", str(config), *args]


def test_a_study_sent_before_any_worker_is_ready_waits_and_says_so(node_factory: Any, tmp_path: Path) -> None:
    node = node_factory({"workers": {"count": 0, "lease_seconds": 10}, "assembly": {"quiet_seconds": 3},
                         "dashboard": {"enabled": True, "port": free_port()}})
    base = f"http://127.0.0.1:{node.config['dashboard']['port']}"
    assert httpx.get(f"{base}/healthz").text == "ok\n"  # alive
    waiting = httpx.get(f"{base}/readyz")
    assert waiting.status_code == 503
    assert waiting.text == ("not ready: no analysis worker is ready: none has finished loading its model yet "
                            "(workers.count 0 here; a worker registers once warmed up)\n")
    doctor = subprocess.run(_cli(node.config_path, "doctor", "--json", "--timeout", "2"), capture_output=True,
                            text=True, cwd=REPO, timeout=120)
    (check,) = [c for c in json.loads(doctor.stdout) if c["check"] == "readiness"]
    assert check["status"] == "WARN"
    assert check["message"].startswith("the node runs but is not ready: no analysis worker is ready")

    truth, pet, ct = synth(tmp_path / "study", seed=51)
    send(node, pet + ct)
    sessions = make_session_factory(make_engine(node.config["database"]["url"]))

    def events() -> list[AuditEvent]:
        with sessions() as session:
            return list(session.scalars(select(AuditEvent).where(AuditEvent.study_uid == truth.study_uid)
                                        .order_by(AuditEvent.id)))

    def state() -> str | None:
        with sessions() as session:
            return session.scalar(select(Study.state).where(Study.study_uid == truth.study_uid))

    (note,) = node.wait_until(lambda: [e for e in events() if e.action == "waiting"], 30, "the waiting note")
    assert note.category == "job" and note.outcome == "warning"
    assert note.reason.startswith("waiting for a worker: no analysis worker is ready")
    assert not [line for line in _log(node) if line["event"] == "node ready"]

    worker = subprocess.Popen(_cli(node.config_path, "worker", "--count", "1"), cwd=REPO, env=os.environ,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        node.wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, 120, "readiness")
        assert httpx.get(f"{base}/readyz").text == "ready\n"
        node.wait_until(lambda: state() == "done", 120, "the analysis")
        said = node.wait_until(lambda: [line for line in _log(node) if line["event"] == "node ready"], 10,
                               "the log line")
        assert len(said) == 1
        actions = [e.action for e in events() if e.category in ("job", "study")]
        assert actions.index("queued") < actions.index("waiting") < actions.index("running")
        # serve, its receiving process and its dashboard wrote structured lines only (warnings included)
        assert all(line.startswith("{") for line in node.log_text().splitlines()), node.log_text()
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(60)


def _log(node: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(node.config["logging"]["file"]).read_text().splitlines()
            if line.startswith("{")]
