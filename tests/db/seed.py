"""Rows and files as the pipeline would leave them, written straight into a database for admin-surface tests.

The dashboard, metrics and retention only read what the other stages wrote; seeding those rows directly
keeps these tests independent of the receiver, the workers and the sender (which have their own tests).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ExplicitVRLittleEndian,
    PositronEmissionTomographyImageStorage,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from sqlalchemy.orm import Session, sessionmaker

from db.audit import record
from db.models import Instance, Job, OutboxItem, Result, Study, WorkerHeartbeat
from db.session import transaction
from dicom_node.config import Settings


@dataclass
class SeededStudy:
    study_uid: str
    accession_number: str
    instance_paths: list[Path] = field(default_factory=list)
    sc_sop_uid: str | None = None
    sc_path: Path | None = None


def write_sc(path: Path, study_uid: str, series_uid: str, sop_uid: str, *, patient_name: str) -> Path:
    """A small RGB Secondary Capture like the report stage writes (a coloured gradient with a bright box)."""
    rows, cols = 96, 128
    pixels = np.zeros((rows, cols, 3), dtype=np.uint8)
    pixels[..., 0] = np.linspace(0, 255, cols, dtype=np.uint8)[None, :]
    pixels[..., 2] = np.linspace(255, 0, rows, dtype=np.uint8)[:, None]
    pixels[30:60, 50:90, 1] = 255
    image = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        series_number=901,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer="psma-node tests",
        patient_id="PID-1",
        patient_name=patient_name,
        patient_orientation=("L", "P"),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save_as(path)
    return path


def seed_study(
    session: Session,
    *,
    storage: Path,
    results: Path,
    accession: str = "ACC-1",
    patient_name: str = "Doe^John",
    state: str = "done",
    reason: str | None = None,
    probability: float | None = 0.83,
    finding: str = "present",
    delivered_at: dt.datetime | None = None,
    outbox_state: str | None = "delivered",
    instances: int = 3,
    received_at: dt.datetime | None = None,
) -> SeededStudy:
    """A study with instance files; when `state` is done also a job, a result, its SC file and outbox rows."""
    now = dt.datetime.now(dt.timezone.utc)
    received_at = received_at or now - dt.timedelta(minutes=10)
    study_uid = generate_uid()
    pet_series = generate_uid()
    study = Study(
        study_uid=study_uid,
        accession_number=accession,
        patient_id="PID-1",
        patient_name=patient_name,
        study_date="20240102",
        calling_ae="MODALITY",
        state=state,
        state_reason=reason,
        instance_count=instances,
        pet_series_uid=pet_series,
        first_received_at=received_at,
        last_received_at=received_at,
        state_changed_at=now,
        # as assembly leaves a study it decided on, so that it does not count as reopened by new data
        assessed_instance_count=instances,
        assessed_received_at=received_at,
    )
    session.add(study)
    session.flush()
    seeded = SeededStudy(study_uid, accession)
    for index in range(instances):
        sop = generate_uid()
        path = storage / study_uid / pet_series / f"{sop}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 128 + b"DICM" + bytes(1000))
        seeded.instance_paths.append(path)
        session.add(
            Instance(
                study_id=study.id,
                study_uid=study_uid,
                series_uid=pet_series,
                sop_instance_uid=sop,
                sop_class_uid=PositronEmissionTomographyImageStorage,
                transfer_syntax_uid=ExplicitVRLittleEndian,
                path=str(path),
                size_bytes=path.stat().st_size,
                sha256="0" * 64,
                modality="PT",
                instance_number=index + 1,
                received_at=received_at,
            )
        )
    record(session, "association", "accepted", peer="127.0.0.1", calling_ae="MODALITY")
    record(session, "instance", "stored", study_uid=study_uid, series_uid=pet_series, instances=instances)
    record(session, "study", state, study_uid=study_uid, reason=reason)
    if state != "done":
        return seeded

    job = Job(
        study_id=study.id,
        generation=1,
        state="done",
        worker_id="worker-1",
        attempts=1,
        created_at=received_at,
        started_at=received_at + dt.timedelta(seconds=5),
        finished_at=received_at + dt.timedelta(seconds=47),
        timings={"load": 3.5, "localise": 1.25, "model": 30.0, "report": 2.0},
    )
    session.add(job)
    session.flush()
    sc_series = generate_uid()
    sc_sop = generate_uid()
    result = Result(
        study_id=study.id,
        job_id=job.id,
        model_id="D",
        weights_sha256="ab" * 32,
        software_version="0.1.0",
        probability=probability,
        finding=finding,
        sr_sop_instance_uid=generate_uid(),
        sc_series_uid=sc_series,
    )
    session.add(result)
    session.flush()
    sc_path = write_sc(
        results / study_uid / f"{sc_sop}.dcm", study_uid, sc_series, sc_sop, patient_name=patient_name
    )
    seeded.sc_sop_uid, seeded.sc_path = sc_sop, sc_path
    record(session, "job", "finished", study_uid=study_uid, job_id=job.id)
    record(session, "result", "created", study_uid=study_uid, probability=probability, finding=finding)
    if outbox_state is not None:
        for sop, sop_class, path in (
            (result.sr_sop_instance_uid, Comprehensive3DSRStorage, results / study_uid / "sr.dcm"),
            (sc_sop, SecondaryCaptureImageStorage, sc_path),
        ):
            session.add(
                OutboxItem(
                    result_id=result.id,
                    study_uid=study_uid,
                    destination="pacs",
                    path=str(path),
                    sop_class_uid=sop_class,
                    sop_instance_uid=sop,
                    state=outbox_state,
                    attempts=1,
                    last_error="association rejected: called AE not recognised"
                    if outbox_state == "failed"
                    else None,
                    delivered_at=delivered_at if outbox_state in ("delivered", "confirmed") else None,
                )
            )
            record(
                session,
                "delivery",
                "sent",
                study_uid=study_uid,
                outcome="ok" if outbox_state != "failed" else "failed",
                destination="pacs",
            )
    return seeded


def seed_worker(session: Session, *, worker_id: str = "worker-1", age_seconds: float = 1.0) -> None:
    beat = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=age_seconds)
    session.add(WorkerHeartbeat(id=worker_id, host="localhost", pid=1234, device="cpu", heartbeat_at=beat))


@dataclass
class Seeded:
    """The dashboard's test world: settings, its database and the two studies `seed` wrote."""

    settings: Settings
    sessions: sessionmaker[Session]
    done: SeededStudy
    failed: SeededStudy


def seed(sessions: sessionmaker[Session], settings: Settings) -> tuple[SeededStudy, SeededStudy]:
    """One delivered study (patient name `Sentinel^Zebra`, to catch leaks), one failed study, one worker."""
    storage, results = Path(settings.storage.directory), Path(settings.storage.results_directory)
    with transaction(sessions) as session:
        done = seed_study(
            session,
            storage=storage,
            results=results,
            accession="ACC-DONE",
            patient_name="Sentinel^Zebra",
            delivered_at=dt.datetime.now(dt.timezone.utc),
        )
        failed = seed_study(
            session,
            storage=storage,
            results=results,
            accession="ACC-FAIL",
            state="failed",
            reason="SUV: RadiopharmaceuticalStartDateTime missing",
        )
        seed_worker(session)
    return done, failed
