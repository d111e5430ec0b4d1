"""Patient names are stored where admins need them (the database) and never written to log files."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from urllib.request import urlopen

import pydicom
from sqlalchemy import select

from db.models import Study
from db.session import make_engine, make_session_factory
from tests.support.tools import require_tool

PATIENT_NAME = "Zzyzx^Quillon^Marvelle"
PATIENT_BIRTH_DATE = "19230417"


def test_patient_name_reaches_the_database_but_not_the_logs(
    node_factory, shared_data: Path, tmp_path: Path
) -> None:
    storescu = require_tool("storescu")
    source = pydicom.dcmread(shared_data / "real-pet-slices" / "1.dcm")
    source.PatientName = PATIENT_NAME
    source.PatientBirthDate = PATIENT_BIRTH_DATE
    sent = tmp_path / "named.dcm"
    source.save_as(sent)

    node = node_factory(
        {
            "logging": {"level": "DEBUG"},
            "workers": {"count": 0},
            "dashboard": {"enabled": True, "allow_anonymous": True},
        }
    )
    done = subprocess.run(
        [storescu, "-aec", "PSMA_NODE", "127.0.0.1", str(node.port), str(sent)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    assert done.returncode == 0, done.stderr

    engine = make_engine(node.config["database"]["url"])
    try:
        sessions = make_session_factory(engine)
        def stored_name() -> str | None:
            with sessions() as session:
                return session.scalar(
                    select(Study.patient_name).where(Study.study_uid == source.StudyInstanceUID)
                )

        stored = node.wait_until(stored_name, timeout=20, what="the study row")
        assert stored == PATIENT_NAME, "the admin's view of the study keeps the name"
    finally:
        engine.dispose()
    page = urlopen(f"http://127.0.0.1:{node.config['dashboard']['port']}/studies/{source.StudyInstanceUID}")
    assert PATIENT_NAME in page.read().decode(), "the dashboard shows the name to admins"
    time.sleep(1.0)  # let assembly ticks log whatever they log about the study
    node.stop()

    log_file = Path(node.config["logging"]["file"])
    logs = log_file.read_text(errors="replace") + node.log_text()
    assert "STORESCU" in logs, "the logs did record the association that brought the name"
    for fragment in (PATIENT_NAME, "Zzyzx", "Quillon", "Marvelle", PATIENT_BIRTH_DATE):
        assert fragment not in logs, f"{fragment!r} leaked into the logs"
