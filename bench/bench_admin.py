"""Admin surfaces on a busy node's database: audit export, /metrics scrape, studies list and timeline.

A year of a busy site is roughly 3,000 studies; the database here gets that many studies with 20 instance
rows and 10 audit events each (30,000 events), on SQLite and (when a server answers) PostgreSQL. Export is
compared with the databases' own dumpers on the same rows (sqlite3 -csv, psql \\copy), the reference for
"as fast as it can be".
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from prometheus_client import generate_latest
from pydicom.uid import ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage, SecondaryCaptureImageStorage
from sqlalchemy import create_engine, insert, text

from db import listings, queries
from db.models import AuditEvent, Instance, Job, OutboxItem, Result, Study
from db.session import make_engine, make_session_factory, upgrade
from dicom_node.cli.audit_cmd import write_events
from dicom_node.config import Settings
from dicom_node.metrics import make_registry

STUDIES = 3000
INSTANCES_PER_STUDY = 20
EVENTS_PER_STUDY = 10
POSTGRES_ADMIN_URL = os.environ.get(
    "PSMA_TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)


def _fill(url: str) -> None:
    engine = make_engine(url)
    now = dt.datetime.now(dt.timezone.utc)
    studies, instances, events, jobs, results, outbox = [], [], [], [], [], []
    for n in range(1, STUDIES + 1):
        uid = f"1.2.826.0.1.{n}"
        at = now - dt.timedelta(minutes=STUDIES - n)
        studies.append(
            {
                "id": n,
                "study_uid": uid,
                "accession_number": f"ACC{n:06d}",
                "patient_id": f"P{n}",
                "patient_name": f"Name^{n}",
                "state": "done" if n % 10 else "failed",
                "state_reason": None if n % 10 else "SUV: missing dose",
                "instance_count": 20,
                "first_received_at": at,
                "last_received_at": at,
                "state_changed_at": at,
            }
        )
        for i in range(INSTANCES_PER_STUDY):
            instances.append(
                {
                    "study_id": n,
                    "study_uid": uid,
                    "series_uid": f"{uid}.1",
                    "sop_instance_uid": f"{uid}.1.{i}",
                    "sop_class_uid": PositronEmissionTomographyImageStorage,
                    "transfer_syntax_uid": ExplicitVRLittleEndian,
                    "path": f"/s/{uid}/{i}.dcm",
                    "size_bytes": 70_000,
                    "sha256": "0" * 64,
                    "modality": "PT",
                    "header": {},
                    "received_at": at,
                }
            )
        for e in range(EVENTS_PER_STUDY):
            events.append(
                {
                    "created_at": at,
                    "category": "instance" if e < 6 else "study",
                    "action": "stored" if e < 6 else "state",
                    "outcome": "ok",
                    "study_uid": uid,
                    "peer": "10.0.0.5",
                    "detail": {"n": e, "calling_ae": "PACS"},
                }
            )
        if n % 10:
            jobs.append(
                {
                    "id": n,
                    "study_id": n,
                    "generation": 1,
                    "state": "done",
                    "attempts": 1,
                    "created_at": at,
                    "started_at": at,
                    "finished_at": at + dt.timedelta(seconds=40),
                    "timings": {"load": 3.0, "model": 30.0, "report": 2.0},
                    "flags": {},
                }
            )
            results.append(
                {
                    "id": n,
                    "study_id": n,
                    "job_id": n,
                    "software_version": "0.1",
                    "probability": 0.4,
                    "finding": "absent",
                    "summary": {},
                }
            )
            outbox.append(
                {
                    "result_id": n,
                    "study_uid": uid,
                    "destination": "pacs",
                    "path": "/r/x.dcm",
                    "sop_class_uid": SecondaryCaptureImageStorage,
                    "sop_instance_uid": f"{uid}.9",
                    "state": "delivered",
                    "next_attempt_at": at,
                    "created_at": at,
                    "delivered_at": at,
                }
            )
    with engine.begin() as connection:
        for table, rows in (
            (Study, studies),
            (Instance, instances),
            (AuditEvent, events),
            (Job, jobs),
            (Result, results),
            (OutboxItem, outbox),
        ):
            connection.execute(insert(table), rows)
    engine.dispose()


def _median(func: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _measure(label: str, url: str, reference: Callable[[Path], None], folder: Path) -> None:
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    settings = Settings.model_validate({"database": {"url": url}})
    registry = make_registry(settings, sessions)

    def export(fmt: str) -> None:
        with sessions() as session, (folder / f"export.{fmt}").open("w") as out:
            write_events(queries.audit_events(session), out, fmt)

    csv_s = _median(lambda: export("csv"), 3)
    jsonl_s = _median(lambda: export("jsonl"), 3)
    ref_s = _median(lambda: reference(folder / "reference.csv"), 3)
    scrape_s = _median(lambda: generate_latest(registry))
    with sessions() as session:
        list_s = _median(lambda: listings.list_studies(session, limit=200))
        failed_s = _median(lambda: listings.list_studies(session, state="failed", limit=200))
        timeline_s = _median(lambda: queries.study_timeline(session, f"ACC{STUDIES // 2:06d}"))
        failures_s = _median(lambda: queries.failures(session))
    events = STUDIES * EVENTS_PER_STUDY
    print(f"[{label}] {STUDIES} studies, {STUDIES * INSTANCES_PER_STUDY} instances, {events} audit events")
    print(f"  audit export csv   {csv_s:6.2f} s ({events / csv_s:,.0f} events/s)")
    print(f"  audit export jsonl {jsonl_s:6.2f} s ({events / jsonl_s:,.0f} events/s)")
    print(f"  reference dumper   {ref_s:6.2f} s  -> ratio csv/reference {csv_s / ref_s:.1f}")
    print(f"  /metrics scrape    {scrape_s * 1000:6.0f} ms (size {len(generate_latest(registry)):,} bytes)")
    print(f"  studies list (200) {list_s * 1000:6.1f} ms; filtered by state {failed_s * 1000:.1f} ms")
    print(
        f"  study timeline     {timeline_s * 1000:6.1f} ms; failures page query {failures_s * 1000:.1f} ms",
        flush=True,
    )
    engine.dispose()


def _sqlite(folder: Path) -> None:
    path = folder / "bench.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    _fill(url)

    def reference(out: Path) -> None:
        with out.open("w") as handle:
            subprocess.run(
                ["sqlite3", "-csv", "-header", str(path), "SELECT * FROM audit_events ORDER BY id"],
                stdout=handle,
                check=True,
            )

    _measure("SQLite", url, reference, folder)


def _postgres(folder: Path) -> None:
    if shutil.which("psql") is None:
        print("[PostgreSQL] skipped: psql not installed")
        return
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"psma_bench_{uuid.uuid4().hex[:8]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
    except Exception as exc:  # no server: the SQLite figures still stand
        print(f"[PostgreSQL] skipped: {type(exc).__name__}")
        return
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        _fill(url)

        def reference(out: Path) -> None:
            subprocess.run(
                [
                    "psql",
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-d",
                    name,
                    "-c",
                    f"\\copy (SELECT * FROM audit_events ORDER BY id) TO '{out}' CSV HEADER",
                ],
                check=True,
                stdout=subprocess.DEVNULL,
            )

        _measure("PostgreSQL", url, reference, folder)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="psma-bench-admin-") as tmp:
        _sqlite(Path(tmp))
        _postgres(Path(tmp))


if __name__ == "__main__":
    main()
