"""Analysed studies as the pipeline and the outcome intake leave them, for evaluation and monitoring tests:
a study, its job, its result with descriptors, the readers' assessments and the reference standards.

Rows only (no instance or result files): the evaluation and drift monitoring read nothing else. Each case is
described by a `CaseSpec`, so a test holds the same values it seeded and can compute its expectations from
them by another route.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from dataclasses import dataclass, field

from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from db.models import Job, ReaderAssessment, ReferenceStandard, Result, ResultDescriptors, Study

WEIGHTS_D = "d0" * 32
EPOCH = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.timezone.utc)
REFERENCE_AFTER_DAYS = 90
"""Seeded reference standards are dated this long after the result."""
_numbers = itertools.count(1)


@dataclass
class Reading:
    """One assessment row of a reader."""

    reader: str
    verdict: str
    finding: str
    reason: str | None = None
    seen_ai_before_report: bool | None = True
    source: str = "api"


@dataclass
class CaseSpec:
    """One analysed study; None for `probability` means the classifier did not run."""

    probability: float | None
    reference: bool | None = None
    method: str = "histopathology"
    at: dt.datetime = EPOCH
    manufacturer: str = "SIEMENS"
    scanner_model: str = "Biograph Vision 600"
    software: str = "VG80B"
    model_id: str = "D"
    weights_sha256: str = WEIGHTS_D
    threshold: float = 0.5
    psa: float | None = 1.2
    psa_source: str = "registered"
    prostatectomy: bool | None = True
    prostatectomy_source: str = "registered"
    envelope_violations: list[str] = field(default_factory=list)
    uptake_time_min: float = 60.0
    injected_activity_mbq: float = 250.0
    weight_kg: float = 80.0
    voxel_mm: tuple[float, float, float] = (4.0, 4.0, 3.0)
    readings: list[Reading] = field(default_factory=list)
    results_mode: str = "live"


@dataclass
class SeededCase:
    spec: CaseSpec
    study_id: int
    study_uid: str
    accession_number: str
    result_id: int


def _study(session: Session, accession: str, state: str, at: dt.datetime, reason: str | None = None) -> Study:
    study = Study(
        study_uid=generate_uid(),
        accession_number=accession,
        patient_id=f"PID-{accession}",
        study_date="20250303",
        calling_ae="MODALITY",
        state=state,
        state_reason=reason,
        instance_count=10,
        first_received_at=at,
        last_received_at=at,
        state_changed_at=at,
        assessed_instance_count=10,
        assessed_received_at=at,
    )
    session.add(study)
    session.flush()
    return study


def seed_case(session: Session, spec: CaseSpec, *, accession: str | None = None) -> SeededCase:
    """The rows of one analysed study, results dated `spec.at`."""
    accession = accession or f"ACC-{next(_numbers):05d}"
    study = _study(session, accession, "done", spec.at - dt.timedelta(minutes=5))
    job = Job(
        study_id=study.id,
        generation=1,
        state="done",
        attempts=1,
        created_at=spec.at,
        started_at=spec.at,
        finished_at=spec.at,
    )
    session.add(job)
    session.flush()
    finding = (
        "undetermined"
        if spec.probability is None
        else ("present" if spec.probability >= spec.threshold else "absent")
    )
    result = Result(
        study_id=study.id,
        job_id=job.id,
        created_at=spec.at,
        model_id=spec.model_id,
        weights_sha256=spec.weights_sha256,
        software_version="0.1.0",
        probability=spec.probability,
        finding=finding,
        sr_sop_instance_uid=generate_uid(),
    )
    session.add(result)
    session.flush()
    session.add(
        ResultDescriptors(
            result_id=result.id,
            study_id=study.id,
            created_at=spec.at,
            manufacturer=spec.manufacturer,
            scanner_model=spec.scanner_model,
            software_versions=spec.software,
            tracer="PSMA-1007",
            pet_voxel_mm=list(spec.voxel_mm),
            pet_slice_thickness_mm=spec.voxel_mm[2],
            injected_activity_mbq=spec.injected_activity_mbq,
            uptake_time_min=spec.uptake_time_min,
            weight_kg=spec.weight_kg,
            psa_ng_ml=spec.psa,
            psa_source=spec.psa_source,
            prostatectomy=spec.prostatectomy,
            prostatectomy_source=spec.prostatectomy_source,
            model_id=spec.model_id,
            weights_sha256=spec.weights_sha256,
            threshold=spec.threshold,
            probability=spec.probability,
            positive=None if spec.probability is None else spec.probability >= spec.threshold,
            results_mode=spec.results_mode,
            envelope_violations=list(spec.envelope_violations),
        )
    )
    if spec.reference is not None:
        session.add(
            ReferenceStandard(
                study_id=study.id,
                recurrence=spec.reference,
                method=spec.method,
                reference_date=spec.at.date() + dt.timedelta(days=REFERENCE_AFTER_DAYS),
                source="tumour board",
                channel="csv",
                actor="tests",
                created_at=spec.at + dt.timedelta(days=30),
            )
        )
    for number, reading in enumerate(spec.readings):
        when = spec.at + dt.timedelta(hours=1, minutes=number)
        session.add(
            ReaderAssessment(
                result_id=result.id,
                study_id=study.id,
                reader=reading.reader,
                source=reading.source,
                verdict=reading.verdict,
                reader_finding=reading.finding,
                reason=reading.reason,
                seen_ai_before_report=reading.seen_ai_before_report,
                assessed_at=when,
                created_at=when,
                actor="tests",
            )
        )
    session.flush()
    return SeededCase(spec, study.id, study.study_uid, accession, result.id)


def seed_unanalysed(session: Session, state: str, reason: str | None, *, at: dt.datetime = EPOCH) -> Study:
    """A study that was rejected, failed, or is still on its way (no result)."""
    return _study(session, f"ACC-{next(_numbers):05d}", state, at, reason)


def mixed_cohort(seed: int = 11, n: int = 48, at: dt.datetime = EPOCH) -> list[CaseSpec]:
    """Two scanners, a quarter without a reference, some without classifier output, one or two readers."""
    rng = random.Random(seed)
    specs = []
    for i in range(n):
        truth = rng.random() < 0.45
        probability = (
            None if i % 13 == 5 else round(min(1.0, max(0.0, rng.gauss(0.6 if truth else 0.4, 0.2))), 3)
        )
        readings = []
        for reader in ("dr-a", "dr-b")[: i % 3]:
            readings.append(
                Reading(
                    reader,
                    rng.choice(["agree", "agree", "disagree", "modified"]),
                    rng.choice(["present", "absent", "absent", "indeterminate"]),
                    reason=rng.choice([None, "missed-focus", "false-positive-physiological"]),
                )
            )
        specs.append(
            CaseSpec(
                probability,
                reference=truth if i % 4 else None,
                method=rng.choice(["histopathology", "imaging-follow-up"]),
                scanner_model="Biograph Vision 600" if i % 2 else "Biograph mCT",
                psa=rng.choice([0.3, 1.5, 4.0]),
                readings=readings,
                at=at + dt.timedelta(hours=i),
            )
        )
    return specs
