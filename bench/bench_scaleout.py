"""Scale-out through deploy/docker-compose.yml: 8 small synthetic studies analysed with 1, then 2 worker
containers (shared PostgreSQL and storage volume, the node's own `serve` running no worker).

Time = first C-STORE of the batch to the last job done, read from the database. Needs root and the Docker
engine the deployment tests start (tests/deploy/engine.py); the image is built once, as in the tests.
Run: .venv/bin/python -m bench.bench_scaleout   (or `make bench-scaleout`)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from dicom_node.synth import SynthOptions, generate_study
from tests.deploy.engine import (
    NODE_IMAGE, build_image, ensure_base_image, ensure_wheelhouse, serve_index, start_engine,
)
from tests.support.node import REPO, free_port, wait_for_port

SMALL = SynthOptions(ct_matrix=64, pet_matrix=32, extent_mm=150.0, ct_slice_mm=10.0, pet_slice_mm=10.0)


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise TimeoutError(what)


def run_batch(engine: object, workers: int, studies: list[list[Path]]) -> float:
    """Seconds from the first C-STORE to the last job done, with `workers` worker containers."""
    project = f"psmabench{workers}"
    pg_port = free_port()
    env = {"PSMA_NODE_IMAGE": NODE_IMAGE, "POSTGRES_PORT": str(pg_port), "PSMA_NODE_WORKERS": "0"}
    compose = engine.compose  # type: ignore[attr-defined]
    compose(project, "up", "-d", "--no-build", "--scale", f"psma-worker={workers}", env=env)
    try:
        db = create_engine(f"postgresql+psycopg2://psma:psma-demo@127.0.0.1:{pg_port}/psma")
        wait_for_port(11112, timeout=180)
        containers = compose(project, "ps", "-q", "psma-worker", env=env).stdout.split()
        _wait(lambda: all("worker started" in engine.docker("logs", c, check=False).stderr  # type: ignore[attr-defined]
                          for c in containers), 180, "workers")
        started = time.monotonic()
        for files in studies:
            subprocess.run(["storescu", "-aec", "PSMA_NODE", "-aet", "ORTHANC", "127.0.0.1", "11112",
                            *map(str, files)], check=True, capture_output=True, timeout=120,
                           env={**os.environ, "TCP_NODELAY": "1"})

        def all_done() -> bool:
            with db.connect() as connection:
                return connection.execute(text("select count(*) from jobs where state = 'done'")).scalar() \
                    == len(studies)
        _wait(all_done, 1800, "all jobs done")
        elapsed = time.monotonic() - started
        db.dispose()
        return elapsed
    finally:
        compose(project, "down", "-v", "--timeout", "30", env=env, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=8)
    args = parser.parse_args()
    engine = start_engine()
    index = serve_index(ensure_wheelhouse())
    try:
        ensure_base_image(engine)
        build_image(engine, NODE_IMAGE, REPO / "deploy" / "Dockerfile", REPO, next(index).build_args)
        engine.compose("psmabench", "build", "postgres", "orthanc", timeout=900)
        with tempfile.TemporaryDirectory() as work:
            studies = []
            for seed in range(args.studies):
                out = Path(work) / f"s{seed}"
                generate_study(out, dataclasses.replace(SMALL, seed=100 + seed))
                studies.append(sorted(out.glob("*/*.dcm")))
            times = {workers: run_batch(engine, workers, studies) for workers in (1, 2)}
    finally:
        index.close()
        engine.stop()
    for workers, seconds in times.items():
        print(f"{workers} worker container(s): {len(studies)} studies in {seconds:.1f} s = "
              f"{len(studies) / seconds * 60:.1f} studies/min")
    print(f"ratio 2/1: {times[1] / times[2]:.2f}x")


if __name__ == "__main__":
    main()
