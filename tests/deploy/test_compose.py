"""deploy/docker-compose.yml, run: PostgreSQL and Orthanc built from Debian packages, the node and two worker
containers standing for other machines (shared PostgreSQL, shared storage volume). A study stored into Orthanc
is routed by its Lua script to the node, analysed, and its results come back into Orthanc; `docker kill` of
the worker container holding the job makes the job run again once, on another worker, with one result.

docs/deployment.md, "2. docker compose" and "5. Adding a worker host", is what this test executes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from sqlalchemy import create_engine, text

from tests.deploy.engine import Engine
from tests.deploy.test_image import small_study, wait_for
from tests.support.node import REPO, free_port

pytestmark = pytest.mark.slow
FIXED_PORTS = {"node DICOM": 11112, "dashboard": 8080, "Orthanc DICOM": 4242, "Orthanc HTTP": 8042}
ORTHANC = "http://127.0.0.1:8042"
AUTH = ("demo", "demo")


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Stack:
    """One compose project; `env` carries the variables the compose file reads."""

    def __init__(self, engine: Engine, node_image: str) -> None:
        self.engine = engine
        self.project = f"psmatest{uuid.uuid4().hex[:6]}"
        self.pg_port = free_port()
        self.env = {"PSMA_NODE_IMAGE": node_image, "POSTGRES_PORT": str(self.pg_port), "PSMA_NODE_WORKERS": "0"}

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return self.engine.compose(self.project, *args, env=self.env, timeout=timeout)

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "-q", service).stdout.split()

    def logs(self, container: str) -> str:
        result = self.engine.docker("logs", container, check=False, timeout=60)
        return result.stdout + result.stderr

    def all_logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "60", timeout=120).stdout

    def database(self) -> Any:
        return create_engine(f"postgresql+psycopg2://psma:psma-demo@127.0.0.1:{self.pg_port}/psma")


@pytest.fixture
def stack(engine: Engine, node_image: str) -> Iterator[Stack]:
    busy = [f"{name} {port}" for name, port in FIXED_PORTS.items() if _port_in_use(port)]
    if busy:
        pytest.fail(f"the demo stack's ports are taken on this machine: {', '.join(busy)}")
    running = Stack(engine, node_image)
    running.compose("build", "postgres", "orthanc", timeout=900)
    try:
        yield running
    finally:
        running.compose("down", "-v", "--timeout", "30", timeout=300)


def _orthanc(path: str) -> Any:
    response = requests.get(f"{ORTHANC}{path}", auth=AUTH, timeout=10)
    response.raise_for_status()
    return response.json()


def _orthanc_up() -> bool:
    try:
        return requests.get(f"{ORTHANC}/system", auth=AUTH, timeout=2).ok
    except requests.RequestException:
        return False


def _results(study_uid: str) -> list[str]:
    found = requests.post(f"{ORTHANC}/tools/find", auth=AUTH, timeout=10,
                          json={"Level": "Series", "Query": {"StudyInstanceUID": study_uid}, "Expand": True})
    found.raise_for_status()
    return [series["MainDicomTags"].get("Modality", "") for series in found.json()
            if series["MainDicomTags"].get("Modality") in ("SR", "OT")]


def _store_into_orthanc(files: list[Path]) -> None:
    sent = subprocess.run(["storescu", "-aec", "ORTHANC", "-aet", "MODALITY", "127.0.0.1", "4242",
                           *map(str, files)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TCP_NODELAY": "1"})
    assert sent.returncode == 0, sent.stderr


def test_routed_study_is_analysed_and_a_killed_worker_s_job_runs_once_elsewhere(
        tmp_path: Path, stack: Stack) -> None:
    stack.compose("up", "-d", "--no-build", "--scale", "psma-worker=2", timeout=600)
    wait_for(_orthanc_up, 120, "Orthanc", stack.all_logs)
    workers = stack.containers("psma-worker")
    assert len(workers) == 2
    wait_for(lambda: all("worker started" in stack.logs(c) for c in workers), 180, "both worker containers",
             stack.all_logs)
    node = stack.containers("psma-node")[0]
    wait_for(lambda: "node started" in stack.logs(node), 180, "the node", stack.all_logs)

    study_uid, files = small_study(tmp_path / "study", seed=21)
    _store_into_orthanc(files)
    db = stack.database()

    def running_job() -> Any:
        with db.connect() as connection:
            return connection.execute(text("select j.id, j.worker_id from jobs j join studies s on s.id = j.study_id "
                                           "where s.study_uid = :uid and j.state = 'running'"),
                                      {"uid": study_uid}).first()
    job = wait_for(running_job, 240, "Orthanc to route the study and a worker to take it", stack.all_logs)
    (holder,) = [c for c in workers if job.worker_id in stack.logs(c)]
    stack.engine.docker("kill", holder)

    wait_for(lambda: "SR" in _results(study_uid), 300, "the results in Orthanc after the kill", stack.all_logs)
    time.sleep(3.0)  # more send ticks and lease checks: nothing may run or arrive twice
    with db.connect() as connection:
        rows = connection.execute(text("select j.state, j.attempts, j.worker_id from jobs j join studies s "
                                       "on s.id = j.study_id where s.study_uid = :uid"), {"uid": study_uid}).all()
        results = connection.execute(text("select count(*) from results r join studies s on s.id = r.study_id "
                                          "where s.study_uid = :uid"), {"uid": study_uid}).scalar()
        requeued = connection.execute(text("select detail from audit_events where category = 'job' and "
                                           "action = 'requeued' and study_uid = :uid"), {"uid": study_uid}).all()
    db.dispose()
    assert len(rows) == 1, rows
    (final,) = rows
    assert final.state == "done" and final.attempts == 2 and final.worker_id != job.worker_id, final
    assert len(requeued) == 1 and results == 1
    assert _results(study_uid).count("SR") == 1
    routed = [s for s in _orthanc("/series") if "RoutedToPsmaNode" in _orthanc(f"/series/{s}/metadata")]
    assert len(routed) == 2, "the PET and CT series are routed, once"
    assert json.loads(stack.engine.docker("inspect", holder).stdout)[0]["State"]["ExitCode"] in (137, 0)

    # Upgrading: stop node and workers, migrate the schema once, start them again (docs, step 6).
    stack.compose("stop", "psma-node", "psma-worker", timeout=300)
    upgraded = stack.compose("run", "--rm", "-T", "--no-deps", "psma-node", "db", "upgrade", timeout=300)
    current = stack.compose("run", "--rm", "-T", "--no-deps", "psma-node", "db", "current", timeout=300)
    assert "current: " in current.stdout and "head: " in current.stdout, upgraded.stdout + current.stdout
    revision = current.stdout.split("current: ")[1].split()[0]
    assert f"head: {revision}" in current.stdout
    stack.compose("start", "psma-node", "psma-worker", timeout=300)

    # Backup (docs, step 7): the database with pg_dump, the storage volume with tar, both restorable.
    dump = stack.compose("exec", "-T", "postgres", "pg_dump", "-U", "psma", "psma", timeout=300).stdout
    assert study_uid in dump and "CREATE TABLE public.jobs" in dump
    volume = f"{stack.project}_node-data"
    archive = tmp_path / "storage.tar"
    with archive.open("wb") as out:
        subprocess.run(["docker", "run", "--rm", "-v", f"{volume}:/data:ro", "debian:bookworm-slim",
                        "tar", "-C", "/data", "-c", "storage", "results"], stdout=out, check=True,
                       env=stack.engine.env, timeout=300)
    listing = subprocess.run(["tar", "-tf", str(archive)], capture_output=True, text=True, check=True).stdout
    assert sum(name.endswith(".dcm") for name in listing.splitlines()) >= len(files)


def test_gpu_override_builds_the_same_dockerfile_with_cuda_torch_and_reserves_the_gpus() -> None:
    """The CUDA image cannot be built here (no GPU, no CUDA wheels); compose must still resolve it."""
    compose = next((c for c in (["docker", "compose"], ["docker-compose"])
                    if subprocess.run([*c, "version"], capture_output=True).returncode == 0), None)
    if compose is None:
        pytest.skip("neither docker compose nor docker-compose is installed")
    resolved = subprocess.run([*compose, "-f", "deploy/docker-compose.yml", "-f", "deploy/docker-compose.gpu.yml",
                               "config"], capture_output=True, text=True, timeout=60, cwd=REPO, check=True).stdout
    services = yaml.safe_load(resolved)["services"]
    build = services["psma-node"]["build"]
    assert build["dockerfile"] == "deploy/Dockerfile" and build["args"]["TORCH_VARIANT"] == "cu128"
    for name in ("psma-node", "psma-worker"):
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["capabilities"] == ["gpu"]
