"""Latency from a study's last C-STORE to its analysis job starting, against Orthanc's stable-study event.

A real `psma-node serve` (SQLite, one worker) receives synthetic PSMA PET/CT studies from dcmtk storescu
(TCP_NODELAY=1); completeness is provable from content and storescu releases its association after the
last instance, so the study is queued at once (no settle window) and an idle worker is woken, not polled.
Target: ≤ 1 s median from the last instance to the job's start. The reference is measured in the same run:
Orthanc at its default StableAge (60 s) receiving the same files, time until its StableStudy change.
mercure's default series timer (60 s) is the same order and is quoted, not run.

    .venv/bin/python -m bench.bench_assembly [--studies 3] [--ct-matrix 512] [--extent 300] [--no-orthanc]

It also times an assembly tick on a database with thousands of finished studies and unchanged receiving
ones, which must stay cheap because it runs every 0.5 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Instance, Job, Study, WorkerHeartbeat
from db.session import make_engine, make_session_factory
from dicom_node.assemble import Assembler
from dicom_node.config import Settings
from dicom_node.synth import SynthOptions, generate_study
from tests.dicom_node.assemble.rows import add_ct, add_pet, add_study, sessions_for
from tests.support.node import NodeProcess, free_port, wait_for_port, write_config

MERCURE_SERIES_TIMER_S = 60.0


def storescu(port: int, files: Sequence[Path], called: str) -> float:
    """Send with dcmtk; returns the wall-clock time storescu finished (last C-STORE answered)."""
    subprocess.run(
        ["storescu", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        check=True,
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
    )
    return time.time()


def _workers_started(sessions: sessionmaker[Session]) -> bool:
    with sessions() as session:
        return bool(session.scalar(select(func.count()).select_from(WorkerHeartbeat)))


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL server of `admin_url`, dropped afterwards."""
    name = f"psma_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def node_latency(
    folder: Path, studies: list[tuple[str, list[Path]]], db_url: str | None = None
) -> list[dict[str, float]]:
    config = write_config(folder / "node", {"workers": {"count": 1}, "logging": {"level": "WARNING"}}, db_url)
    node = NodeProcess(config).start()
    sessions = make_session_factory(make_engine(node.config["database"]["url"]))
    # Time the steady state: a worker signs in (heartbeat row) once torch and the pipeline are loaded.
    node.wait_until(lambda: _workers_started(sessions), 180, "the worker to start")
    rows = []
    try:
        for study_uid, files in studies:
            sent = storescu(node.port, files, "PSMA_NODE")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with sessions() as session:
                    study = session.scalar(select(Study).where(Study.study_uid == study_uid))
                    job = session.scalar(select(Job).where(Job.study_id == study.id)) if study else None
                    if job is not None and job.started_at is not None:
                        last = session.scalar(
                            select(func.max(Instance.received_at)).where(Instance.study_id == study.id)
                        )
                        complete = session.scalar(
                            select(AuditEvent.created_at).where(
                                AuditEvent.study_uid == study_uid, AuditEvent.action == "complete"
                            )
                        )
                        break
                time.sleep(0.05)
            else:
                raise RuntimeError(f"no job started for {study_uid}:\n{node.log_text()[-3000:]}")
            started = job.started_at.timestamp()
            rows.append(
                {
                    "last_instance_to_complete_s": (complete - last).total_seconds(),
                    "last_instance_to_job_start_s": started - last.timestamp(),
                    "storescu_end_to_job_start_s": started - sent,
                }
            )
            while True:  # let the analysis finish so the next study is timed on an idle node
                with sessions() as session:
                    if session.scalar(select(Study.state).where(Study.study_uid == study_uid)) in (
                        "done",
                        "failed",
                        "rejected",
                    ):
                        break
                time.sleep(0.2)
    finally:
        node.stop()
    return rows


def orthanc_latency(folder: Path, files: list[Path]) -> float:
    """Seconds from storescu's end to Orthanc's StableStudy change, at its default StableAge."""
    http, dicom = free_port(), free_port()
    (folder / "orthanc").mkdir(parents=True, exist_ok=True)
    config = folder / "orthanc.json"
    config.write_text(
        json.dumps(
            {
                "Name": "bench",
                "StorageDirectory": str(folder / "orthanc"),
                "IndexDirectory": str(folder / "orthanc"),
                "HttpPort": http,
                "DicomPort": dicom,
                "DicomAet": "ORTHANC",
                "RemoteAccessAllowed": False,
                "AuthenticationEnabled": False,
                "DicomCheckCalledAet": False,
                "Plugins": [],
            }
        )
    )
    process = subprocess.Popen(["Orthanc", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(dicom, 30)
        wait_for_port(http, 30)
        sent = storescu(dicom, files, "ORTHANC")
        while time.time() - sent < 180:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/changes?since=0&limit=10000") as answer:
                changes = json.load(answer)["Changes"]
            if any(c["ChangeType"] == "StableStudy" for c in changes):
                return time.time() - sent
            time.sleep(0.2)
        raise RuntimeError("Orthanc never reported the study stable")
    finally:
        process.terminate()
        process.wait(30)


def tick_cost(folder: Path, settled: int = 5000, receiving: int = 50) -> tuple[float, float]:
    """Milliseconds per assembly tick, many finished and unchanged receiving studies: (first, later)."""
    url = f"sqlite:///{folder / 'ticks.db'}"
    sessions = sessions_for(url)
    now = dt.datetime.now(dt.timezone.utc)
    with sessions.begin() as session:
        session.execute(
            insert(Study),
            [
                {
                    "study_uid": f"2.25.{n}",
                    "state": "done",
                    "instance_count": 300,
                    "assessed_instance_count": 300,
                    "last_received_at": now,
                    "assessed_received_at": now,
                }
                for n in range(settled)
            ],
        )
    for _ in range(receiving):
        study_id, _uid = add_study(sessions)
        add_pet(sessions, study_id, slices=150, skip=[75])  # incomplete: stays receiving, waits for quiet
        add_ct(sessions, study_id, slices=200)
    settings = Settings()
    assembler = Assembler()
    started = time.perf_counter()
    assembler.tick(settings, sessions)
    first = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    for _ in range(20):
        assembler.tick(settings, sessions)
    return first, (time.perf_counter() - started) * 1000 / 20


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(prog="bench.bench_assembly", description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=3)
    parser.add_argument("--ct-matrix", type=int, default=512)
    parser.add_argument("--pet-matrix", type=int, default=200)
    parser.add_argument("--extent", type=float, default=300.0)
    parser.add_argument("--no-orthanc", action="store_true")
    parser.add_argument("--postgres", metavar="ADMIN_URL", default=None,
                        help="Run the node on a fresh database of this PostgreSQL server (LISTEN/NOTIFY).")
    args = parser.parse_args(list(argv))
    folder = Path(tempfile.mkdtemp(prefix="bench-assembly-"))
    try:
        studies = []
        for seed in range(args.studies):
            out = folder / f"study{seed}"
            truth = generate_study(
                out,
                SynthOptions(
                    seed=100 + seed,
                    ct_matrix=args.ct_matrix,
                    pet_matrix=args.pet_matrix,
                    extent_mm=args.extent,
                ),
            )
            studies.append((truth.study_uid, sorted(out.rglob("*.dcm"))))
        print(
            f"{args.studies} studies of {len(studies[0][1])} instances (CT {args.ct_matrix}², "
            f"PET {args.pet_matrix}², {args.extent:g} mm), {dt.date.today()}"
        )
        if args.postgres:
            with postgres_database(args.postgres) as url:
                rows = node_latency(folder, studies, url)
        else:
            rows = node_latency(folder, studies)
        print(f"  database: {'PostgreSQL (LISTEN/NOTIFY)' if args.postgres else 'SQLite (named pipes)'}")
        for key in rows[0]:
            values = [r[key] for r in rows]
            print(
                f"  psma-node {key:<30} median {statistics.median(values):5.2f} s  "
                f"max {max(values):5.2f} s  ({', '.join(f'{v:.2f}' for v in values)})"
            )
        median = statistics.median(r["last_instance_to_job_start_s"] for r in rows)
        print(f"  target: last instance -> job started <= 1 s median: {'met' if median <= 1.0 else 'MISSED'} "
              f"(median {median:.2f} s)")
        if not args.no_orthanc and shutil.which("Orthanc"):
            stable = orthanc_latency(folder, studies[0][1])
            ours = statistics.median(r["storescu_end_to_job_start_s"] for r in rows)
            print(
                f"  Orthanc 1.10 StableStudy after storescu end   {stable:5.2f} s  "
                f"(ratio Orthanc / psma-node median: {stable / ours:.0f}x)"
            )
        print(f"  mercure series timer (default, quoted)       {MERCURE_SERIES_TIMER_S:5.2f} s")
        first, later = tick_cost(folder)
        print(
            f"  assembly tick, 5000 finished + 50 receiving studies (17 500 instances): "
            f"first {first:.0f} ms, then {later:.1f} ms per tick (unchanged studies are not re-read)"
        )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
