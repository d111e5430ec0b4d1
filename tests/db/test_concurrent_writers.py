"""Several processes writing to one SQLite database at once (receiver + workers) never see "locked"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from db.models import AuditEvent, Study
from db.session import make_engine, make_session_factory, upgrade
from tests.support.node import REPO

WRITER = """
import sys
from sqlalchemy import func, select
from db.audit import record
from db.models import Study
from db.session import make_engine, make_session_factory, transaction
url, writer, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
sessions = make_session_factory(make_engine(url))
for i in range(count):
    with transaction(sessions) as session:
        # read first, then write in the same transaction: what assembly and workers do
        seen = session.scalar(select(func.count()).select_from(Study))
        session.add(Study(study_uid=f"1.2.{writer}.{i}", state="receiving", instance_count=seen))
        record(session, "instance", "stored", study_uid=f"1.2.{writer}.{i}", writer=writer)
"""


def test_parallel_processes_write_without_lock_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    upgrade(url)
    writers, per_writer = 4, 150
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, str(w), str(per_writer)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(writers)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "database is locked" not in err
    engine = make_engine(url)
    try:
        with make_session_factory(engine)() as session:
            assert session.scalar(select(func.count()).select_from(Study)) == writers * per_writer
            assert session.scalar(select(func.count()).select_from(AuditEvent)) == writers * per_writer
    finally:
        engine.dispose()
