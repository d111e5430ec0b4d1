"""deploy/Dockerfile, built from the working tree and run: the container checks itself with `doctor`, serves,
analyses a study sent with dcmtk storescu from the host and delivers the results into a real Orthanc,
stops cleanly on `docker stop` (SIGTERM through tini: listener closed, job released, nothing lost) and
finds its database and storage again after a restart. It runs as a non-root user and carries no weights.

docs/deployment.md, "1. The image", is the walk-through these tests execute.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text

from dicom_node.synth import SynthOptions, generate_study
from tests.deploy.engine import Engine
from tests.support.node import free_port
from tests.support.orthanc import OrthancServer
from tests.support.tools import require_tool

pytestmark = pytest.mark.slow
SMALL = {"ct_matrix": 64, "pet_matrix": 32, "extent_mm": 150.0, "ct_slice_mm": 10.0, "pet_slice_mm": 10.0}
STATE = "/var/lib/psma-node"


def wait_for(check: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str] = lambda: "",
             interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs()[-5000:]}")


def small_study(out: Path, seed: int) -> tuple[str, list[Path]]:
    truth = generate_study(out, SynthOptions(seed=seed, **SMALL))
    return truth.study_uid, sorted(out.glob("*/*.dcm"))


def storescu(port: int, files: list[Path], called: str = "PSMA_NODE") -> None:
    sent = subprocess.run([require_tool("storescu"), "-aec", called, "-aet", "MODALITY", "127.0.0.1", str(port),
                           *map(str, files)], check=False, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TCP_NODELAY": "1"})
    assert sent.returncode == 0, sent.stderr


def _job_state(db: Any, study_uid: str) -> str | None:
    with db.connect() as connection:
        return connection.execute(text("select j.state from jobs j join studies s on s.id = j.study_id "
                                       "where s.study_uid = :uid"), {"uid": study_uid}).scalar()


def results_in(orthanc: OrthancServer, study_uid: str) -> list[dict[str, Any]]:
    return [t for t in orthanc.study_instances(study_uid) if t.get("Modality") in ("SR", "OT")]


class NodeContainer:
    """`docker run` of the node image with a config file and a named data volume, host networking."""

    def __init__(self, engine: Engine, image: str, config: Path, volume: str, port: int) -> None:
        self.engine, self.image, self.config, self.volume, self.port = engine, image, config, volume, port
        self.name = f"psma-node-test-{uuid.uuid4().hex[:8]}"

    def mounts(self) -> list[str]:
        return ["--network", "host", "-v", f"{self.volume}:{STATE}",
                "-v", f"{self.config}:/etc/psma-node/config.yaml:ro"]

    def once(self, *command: str) -> subprocess.CompletedProcess[str]:
        return self.engine.docker("run", "--rm", *self.mounts(), self.image, *command, check=False, timeout=180)

    def run(self) -> None:
        self.engine.docker("run", "-d", "--name", self.name, "--stop-timeout", "60", *self.mounts(), self.image)

    def logs(self) -> str:
        result = self.engine.docker("logs", self.name, check=False, timeout=60)
        return result.stdout + result.stderr

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.logs().splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return found

    def database(self) -> Any:
        """The node's SQLite database, read from the host through the volume's mount point."""
        mountpoint = self.engine.docker("volume", "inspect", self.volume, "--format", "{{.Mountpoint}}").stdout
        return create_engine(f"sqlite:///{mountpoint.strip()}/psma-node.db")

    def remove(self) -> None:
        self.engine.docker("rm", "-f", self.name, check=False, timeout=120)


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancServer]:
    with OrthancServer(tmp_path / "orthanc", aet="ORTHANC") as server:
        yield server


@pytest.fixture
def container(engine: Engine, node_image: str, tmp_path: Path, orthanc: OrthancServer) -> Iterator[NodeContainer]:
    """The node's config as a site writes it: everything under the volume, results to the Orthanc."""
    config = {
        "node": {"ae_title": "PSMA_NODE", "bind": "127.0.0.1", "port": free_port(), "allow_any_calling_ae": True,
                 "min_free_disk_mb": 0},
        "storage": {"directory": f"{STATE}/storage", "results_directory": f"{STATE}/results"},
        "database": {"url": f"sqlite:///{STATE}/psma-node.db", "auto_upgrade": True},
        "workers": {"count": 1, "lease_seconds": 15, "stop_grace_seconds": 20},
        "models": {"models_dir": f"{STATE}/models"},
        "assembly": {"quiet_seconds": 3, "ceiling_seconds": 120},
        "results": {"send_tick_seconds": 0.5, "destinations": [
            {"name": "orthanc", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
             "port": orthanc.dicom_port}]},
        "dashboard": {"enabled": False},
        "logging": {"format": "json", "level": "INFO"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)  # the image's user (uid 10001) reads it through the bind mount
    volume = f"psma-node-test-{uuid.uuid4().hex[:8]}"
    node = NodeContainer(engine, node_image, path, volume, config["node"]["port"])
    yield node
    node.remove()
    engine.docker("volume", "rm", "-f", volume, check=False, timeout=120)


def test_image_runs_as_non_root_without_weights_and_with_its_tools(engine: Engine, node_image: str) -> None:
    info = json.loads(engine.docker("image", "inspect", node_image).stdout)[0]["Config"]
    assert info["User"] == "psma-node" and STATE in info["Volumes"]
    listing = engine.docker("run", "--rm", "--entrypoint", "sh", node_image, "-c",
                            "id -u; for tool in storescu tini psma-node; do command -v $tool; done; "
                            "ls -A /var/lib/psma-node/models; "
                            "find / -xdev -size +1M \\( -name '*.pt' -o -name '*.pth' -o -name '*.ckpt' "
                            "-o -name '*.safetensors' \\) 2>/dev/null | head").stdout.split()
    assert listing[0] == "10001"
    assert any(p.endswith("/storescu") for p in listing) and any(p.endswith("/psma-node") for p in listing)
    assert len(listing) == 4, f"weights inside the image: {listing[4:]}"
    version = engine.docker("run", "--rm", node_image, "--version").stdout
    assert "psma-node" in version.lower() or version.strip()


def test_container_analyses_a_study_into_orthanc_stops_cleanly_and_keeps_its_state(
        tmp_path: Path, container: NodeContainer, orthanc: OrthancServer) -> None:
    doctor = container.once("doctor")
    report = doctor.stdout + doctor.stderr
    lines = report.splitlines()
    for check in ("dicom port", "storage.directory", "destination orthanc", "device", "dcmtk"):
        assert any(line.startswith("OK") and check in line for line in lines), report
    # the image carries no weights: the only failure is the missing checkpoint, until it is imported
    assert [line for line in lines if line.startswith("FAIL")] == [
        line for line in lines if line.startswith("FAIL  model")] != [], report

    container.run()
    port = container.port
    wait_for(lambda: "node started" in container.logs(), 90, "the node to start", container.logs)

    first_uid, first = small_study(tmp_path / "first", seed=11)
    storescu(port, first)
    results = wait_for(lambda: len(results_in(orthanc, first_uid)) >= 2 and results_in(orthanc, first_uid),
                       300, "SR and SC of the first study in Orthanc", container.logs)
    assert {"SR", "OT"} <= {t["Modality"] for t in results}

    # A second study, stopped mid-analysis: docker stop sends SIGTERM; the worker releases its job. Without
    # weights a job takes about a second, so the stop can come too late: then the job is done, the node is
    # started again and another study is tried.
    db = container.database()
    sent = len(first)
    for attempt, seed in enumerate((12, 13, 14)):
        second_uid, second = small_study(tmp_path / f"second-{seed}", seed=seed)
        storescu(port, second)
        sent += len(second)
        wait_for(lambda uid=second_uid: _job_state(db, uid) in ("running", "done"), 120,
                 "the second study's job to run", container.logs, interval=0.1)
        stopped = time.monotonic()
        container.engine.docker("stop", "-t", "60", container.name, timeout=120)
        took = time.monotonic() - stopped
        state = json.loads(container.engine.docker("inspect", container.name).stdout)[0]["State"]
        assert state["ExitCode"] == 0 and not state["OOMKilled"], container.logs()[-4000:]
        assert took < 45, f"docker stop took {took:.0f} s (the grace is 20 s)"
        if _job_state(db, second_uid) != "done" or attempt == 2:
            break
        container.engine.docker("start", container.name)
        wait_for(lambda starts=attempt + 2: container.logs().count("node started") == starts, 90,
                 "the node to start again", container.logs)
    messages = [event.get("event", "") for event in container.events()]
    assert "node stopping" in messages and "node stopped" in messages, messages[-20:]
    with db.connect() as connection:
        job = connection.execute(text("select j.state, j.worker_id, j.attempts from jobs j join studies s "
                                      "on s.id = j.study_id where s.study_uid = :uid"), {"uid": second_uid}).one()
        instances = connection.execute(text("select count(*) from instances")).scalar()
        released = connection.execute(text("select count(*) from audit_events where category = 'job' and "
                                            "action = 'requeued' and study_uid = :uid"), {"uid": second_uid}).scalar()
    assert job.state == "queued" and job.worker_id is None, job
    assert released == 1 and instances == sent

    # Restart: the same volume, the same database; the released job runs and its results arrive, once.
    container.engine.docker("start", container.name)
    wait_for(lambda: len(results_in(orthanc, second_uid)) >= 2, 300, "the second study's results after restart",
             container.logs)
    time.sleep(2.0)  # further send ticks: nothing may arrive twice
    with db.connect() as connection:
        jobs = connection.execute(text("select state from jobs")).scalars().all()
    assert set(jobs) == {"done"} and len(jobs) == attempt + 2
    assert len([t for t in results_in(orthanc, second_uid) if t["Modality"] == "SR"]) == 1
    assert len([t for t in results_in(orthanc, first_uid) if t["Modality"] == "SR"]) == 1
    db.dispose()
