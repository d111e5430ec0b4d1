"""The node's "infer" stage: run one claimed job from stored files to a Result row and result objects.

It reads the job's PET and CT instance paths from the database, the clinical values registered for the
accession, runs the analysis pipeline (inference/, which knows nothing of the database), and in one
transaction closes the job, stores the Result, has the report stage write the SR and Secondary Capture and
queue them for delivery, supersedes the previous result, and moves the study to done. If the job was taken
away meanwhile (the study was reopened by new data, or the lease was lost) the outcome is discarded.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db import audit
from db.clinical import lookup_clinical
from db.clock import utcnow
from db.models import Instance, JobState, Result, ResultDescriptors, Study, StudyState
from db.outcomes import current_result
from db.session import transaction
from dicom_node.config import Settings
from dicom_node.evaluation.descriptors import describe
from dicom_node.evaluation.envelope import check as check_envelope
from dicom_node.inference_options import analysis_options, registered_clinical
from dicom_node.jobs import ClaimedJob, finish_job
from dicom_node.report import publish_result
from dicom_node.report.seg import warm_up as warm_up_seg
from dicom_node.study_state import transition
from inference.analysis import AnalysisError, analyse
from inference.checkpoints import CheckpointError, installed_model, load_model
from inference.model_specs import get_spec, routable_models
from inference.result import AnalysisResult

log = logging.getLogger(__name__)


class InputsMissing(Exception):
    """The job's stored instances are gone (purged or lost files): it cannot run."""


def warm_up(settings: Settings, device: str) -> None:
    """Pay the per-process costs at worker start, not in the first study: verify and build every installed
    routable model (kept by `load_model`), and build a throw-away SEG (highdicom's lazy tables).

    A checkpoint that fails here is only logged: the job that needs it fails with the same clear error.
    """
    models = settings.models
    for model_id in routable_models(models.routing, models.default_model):
        try:
            if installed_model(Path(models.models_dir), model_id) is None:
                continue  # the worker already warned that the weights are missing
            load_model(Path(models.models_dir), get_spec(model_id, dict(models.expected_sha256)),
                       torch.device(device))
        except (CheckpointError, ValueError) as exc:
            log.warning("model not preloaded", extra={"model": model_id, "reason": str(exc)})
    warm_up_seg()


def series_paths(session: Session, study_id: int, series_uid: str) -> list[Path]:
    """Files of the series' current instances, in slice order."""
    paths = session.scalars(
        select(Instance.path)
        .where(
            Instance.study_id == study_id,
            Instance.series_uid == series_uid,
            Instance.current.is_(True),
            Instance.analysable.is_(True),
            Instance.missing_file.is_(False),
        )
        .order_by(Instance.slice_position, Instance.instance_number, Instance.id)
    ).all()
    found = [Path(p) for p in paths if Path(p).exists()]
    if not found:
        raise InputsMissing(f"no stored files left for series {series_uid}")
    return found


def _plain(value: Any) -> Any:
    """JSON-able copy of result parts (dataclasses, enums, tuples), without arrays or images."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not isinstance(getattr(value, f.name), np.ndarray)  # masks and affines stay out of the summary
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def summarise(analysis: AnalysisResult, job: ClaimedJob) -> dict[str, Any]:
    """What the Result row keeps of an analysis: everything except pixel data."""
    keep = (
        "finding",
        "probability",
        "threshold",
        "model_id",
        "classifier_run",
        "classifier_note",
        "psa",
        "prostatectomy",
        "localisation",
        "quantification",
        "suv_factor",
        "pet_series_uid",
        "ct_series_uid",
        "device",
        "timings",
        "warnings",
        "envelope_violations",
    )
    summary = {name: _plain(getattr(analysis, name)) for name in keep}
    summary["findings"] = None if analysis.findings is None else analysis.findings.to_summary()
    summary.update(job_id=job.id, generation=job.generation, assembly=job.flags)
    return summary


def _audit_findings(analysis: AnalysisResult) -> dict[str, Any] | None:
    """The findings the audit keeps: foci measures and scores, reference SUVmeans and how they were found."""
    if analysis.findings is None:
        return None
    summary = analysis.findings.to_summary()
    keys = ("number", "site", "suv_max", "suv_peak", "volume_ml", "bladder_relation", "mipsma", "mipsma_note")
    return {
        "foci": [{k: focus[k] for k in keys} for focus in summary["foci"]],  # type: ignore[attr-defined]
        "references": summary["references"],
        "mipsma_note": summary["mipsma_note"],
        "local_category": summary["local_category"],
        "local_category_note": summary["local_category_note"],
    }


def _audit_envelope(session: Session, study: Study, result: Result, violations: list[str]) -> None:
    """A result outside the validated envelope is an audited warning (it is also kept in its descriptors)."""
    if not violations:
        return
    reason = "outside the conditions the model was validated for: " + "; ".join(violations)
    audit.record(session, "result", "outside-envelope", outcome="warning", reason=reason,
                 study_uid=study.study_uid, result_id=result.id, violations=violations)
    log.warning("result outside the validated envelope",
                extra={"study_uid": study.study_uid, "result_id": result.id, "reason": reason})


def _describe(exc: BaseException) -> str:
    if isinstance(exc, AnalysisError):
        return f"analysis refused at {exc.stage}: {exc.reason}"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fail(
    sessions: sessionmaker[Session],
    job: ClaimedJob,
    worker_id: str,
    device: str,
    reason: str,
    elapsed: float,
    started: str,
) -> None:
    with transaction(sessions) as session:
        if not finish_job(
            session, job.id, worker_id, JobState.FAILED, error=reason, timings={"total": elapsed}
        ):
            audit.record(
                session,
                "job",
                "discarded",
                outcome="cancelled",
                study_uid=job.study_uid,
                reason=f"job was cancelled or taken away while running; its failure ignored: {reason}",
                job_id=job.id,
                worker_id=worker_id,
            )
            return
        audit.record(
            session,
            "job",
            "failed",
            outcome="failed",
            reason=reason,
            study_uid=job.study_uid,
            actor=worker_id,
            job_id=job.id,
            worker_id=worker_id,
            device=device,
            started_at=started,
            finished_at=utcnow().isoformat(),
            timings={"total": elapsed},
            attempt=job.attempts,
        )
        study = session.get(Study, job.study_id)
        if study is not None and study.state == StudyState.RUNNING.value:
            transition(
                session,
                study,
                StudyState.FAILED,
                reason=reason,
                rule="analysis-error",
                actor=worker_id,
                job_id=job.id,
            )
    log.warning("job failed", extra={"job_id": job.id, "study_uid": job.study_uid, "reason": reason})


def run_job(
    settings: Settings, sessions: sessionmaker[Session], job: ClaimedJob, worker_id: str, device: str
) -> str:
    """Analyse, store and publish; returns the job's outcome: done, failed or discarded."""
    started = utcnow().isoformat()
    clock = time.monotonic()
    try:
        with sessions() as session:
            study = session.get(Study, job.study_id)
            assert study is not None
            pet_paths = series_paths(session, job.study_id, job.pet_series_uid)
            ct_paths = series_paths(session, job.study_id, job.ct_series_uid)
            found = lookup_clinical(session, study.accession_number, study.patient_id)
        registered = registered_clinical(found)
        analysis = analyse(pet_paths, ct_paths, analysis_options(settings, device), registered=registered)
    except Exception as exc:
        _fail(sessions, job, worker_id, device, _describe(exc), time.monotonic() - clock, started)
        return JobState.FAILED.value
    if job.flags.get("tracer_flagged"):
        analysis.warnings.append(
            f"tracer {job.flags.get('tracer')!r} is not [18F]PSMA-1007, the tracer the model was trained on"
        )
    if job.flags.get("incomplete"):
        analysis.warnings.append("analysed although incomplete: " + "; ".join(job.flags["incomplete"]))
    if job.flags.get("ct_lossy"):
        analysis.warnings.append(f"CT is lossy-compressed ({job.flags['ct_lossy']}): it only places the "
                                 "analysed region and the organs, the PET's SUV are unaffected")
    timings = {**analysis.timings, "total": round(time.monotonic() - clock, 4)}
    try:
        outcome = _store(settings, sessions, job, worker_id, analysis, timings, pet_paths[0], started)
    except Exception as exc:
        log.exception("storing the result failed", extra={"job_id": job.id})
        _fail(
            sessions,
            job,
            worker_id,
            device,
            f"result could not be stored: {_describe(exc)}",
            time.monotonic() - clock,
            started,
        )
        return JobState.FAILED.value
    return outcome


def _store(
    settings: Settings,
    sessions: sessionmaker[Session],
    job: ClaimedJob,
    worker_id: str,
    analysis: AnalysisResult,
    timings: dict[str, float],
    pet_file: Path,
    started: str,
) -> str:
    pet_headers = analysis.series_headers.get(analysis.pet_series_uid)
    pet_header = pet_headers[0] if pet_headers else pydicom.dcmread(pet_file, stop_before_pixels=True)
    mode = settings.results.mode
    descriptors = describe(analysis, pet_headers or [pet_header], mode)
    # Before the report is built: the SR and the SC say when a result lies outside the validated envelope.
    analysis.envelope_violations = check_envelope(descriptors, settings.envelope)
    descriptors = dataclasses.replace(descriptors, envelope_violations=list(analysis.envelope_violations))
    with transaction(sessions) as session:
        if not finish_job(session, job.id, worker_id, JobState.DONE, timings=timings):
            audit.record(
                session,
                "job",
                "discarded",
                outcome="cancelled",
                study_uid=job.study_uid,
                reason="job was cancelled or taken away while running (study reopened or lease "
                "lost): its result is not stored",
                job_id=job.id,
                worker_id=worker_id,
            )
            log.info("job result discarded", extra={"job_id": job.id, "study_uid": job.study_uid})
            return "discarded"
        study = session.get(Study, job.study_id)
        assert study is not None
        previous = current_result(session, study)
        result = Result(
            study_id=study.id,
            job_id=job.id,
            model_id=analysis.model_id,
            weights_sha256=analysis.weights_sha256,
            software_version=analysis.software_version,
            probability=analysis.probability,
            finding=analysis.finding.value,
            summary={**summarise(analysis, job), "results_mode": mode},
        )
        session.add(result)
        session.flush()
        session.add(ResultDescriptors(result_id=result.id, study_id=study.id, **descriptors.columns()))
        _audit_envelope(session, study, result, analysis.envelope_violations)
        publish_result(session, settings, study, result, analysis, pet_header, superseded=previous)
        audit.record(
            session,
            "job",
            "done",
            study_uid=study.study_uid,
            actor=worker_id,
            job_id=job.id,
            worker_id=worker_id,
            device=analysis.device,
            started_at=started,
            finished_at=utcnow().isoformat(),
            timings=timings,
            attempt=job.attempts,
            result_id=result.id,
            finding=analysis.finding.value,
            probability=analysis.probability,
            findings=_audit_findings(analysis),
            results_mode=mode,
            envelope_violations=analysis.envelope_violations,
        )
        probability = "n/a" if analysis.probability is None else f"{analysis.probability:.3f}"
        transition(
            session,
            study,
            StudyState.DONE,
            reason=f"{analysis.finding.value} (probability {probability})"
            + (f", supersedes result {previous.id}" if previous is not None else ""),
            rule="analysis-done",
            actor=worker_id,
            job_id=job.id,
            result_id=result.id,
        )
    log.info("job done", extra={"job_id": job.id, "study_uid": job.study_uid, "timings": str(timings)})
    return JobState.DONE.value
