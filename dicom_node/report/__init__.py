"""The report stage: turn an analysis into an SR and a Secondary Capture series, durably, and queue them.

`publish_result` runs inside the worker's transaction: the files are written and fsynced first, then the
outbox rows are added to the caller's session, so once the caller commits, every object to deliver exists
both as a row and as a file before the sender's first attempt (and neither exists if the commit fails,
apart from orphan files that nothing references).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import audit
from db.models import Instance, OutboxItem, Result, Study
from dicom_node.config import Settings
from dicom_node.outbox import enqueue, sender_destination
from dicom_node.report.render import PanelFacts, render_all
from dicom_node.report.sc import build_sc_series
from dicom_node.report.sr import build_sr, device_uid
from inference.result import AnalysisResult

log = logging.getLogger(__name__)

__all__ = ["publish_result", "write_durably"]


def write_durably(dataset: Dataset, path: Path) -> None:
    """tmp file, fsync, rename, fsync the folder: after return the file survives a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        dataset.save_as(handle, enforce_file_format=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _evidence(session: Session, study: Study, analysis: AnalysisResult, pet_header: Dataset) -> list[Dataset]:
    """The PET header first (patient/study attributes), then every current PET and CT instance analysed."""
    evidence = [pet_header]
    series = [uid for uid in (analysis.pet_series_uid, analysis.ct_series_uid) if uid]
    if study.id is None or not series:
        return evidence
    rows = session.execute(
        select(Instance.series_uid, Instance.sop_class_uid, Instance.sop_instance_uid)
        .where(Instance.study_id == study.id, Instance.series_uid.in_(series), Instance.current.is_(True))
        .order_by(Instance.series_uid, Instance.instance_number)
    ).all()
    for series_uid, sop_class, sop_uid in rows:
        if sop_uid == pet_header.SOPInstanceUID:
            continue
        item = Dataset()
        item.StudyInstanceUID = pet_header.StudyInstanceUID
        item.SeriesInstanceUID = series_uid
        item.SOPClassUID = sop_class
        item.SOPInstanceUID = sop_uid
        evidence.append(item)
    return evidence


def _predecessor(session: Session, superseded: Result | None, study_uid: str) -> list[Dataset] | None:
    """A reference to the SR this result replaces (Predecessor Documents Sequence)."""
    if superseded is None or not superseded.sr_sop_instance_uid:
        return None
    summary = superseded.summary or {}
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.SeriesInstanceUID = summary.get("sr_series_uid", "")
    item.SOPClassUID = summary.get("sr_sop_class_uid", "")
    item.SOPInstanceUID = superseded.sr_sop_instance_uid
    if not item.SeriesInstanceUID or not item.SOPClassUID:
        path = session.scalar(select(OutboxItem.path).where(
            OutboxItem.sop_instance_uid == superseded.sr_sop_instance_uid).limit(1))
        if path and Path(path).exists():
            header = dcmread(path, stop_before_pixels=True)
            item.SeriesInstanceUID, item.SOPClassUID = header.SeriesInstanceUID, header.SOPClassUID
    if not item.SeriesInstanceUID or not item.SOPClassUID:
        log.warning("superseded SR cannot be referenced", extra={"result_id": superseded.id})
        return None
    return [item]


def destinations_for(session: Session, settings: Settings, study: Study) -> list[str]:
    """Configured destinations, plus the sender when return_to_sender is on and its port is known."""
    names = [d.name for d in settings.results.destinations]
    if settings.results.return_to_sender:
        sender = sender_destination(settings, study.calling_ae)
        if sender is None:
            audit.record(session, "result", "return-to-sender-skipped", outcome="warning",
                         reason=f"calling AE {study.calling_ae!r} has no port in node.allowed_calling_aes",
                         study_uid=study.study_uid)
        else:
            names.append(sender)
    return list(dict.fromkeys(names))


def publish_result(session: Session, settings: Settings, study: Study, result_row: Result,
                   analysis: AnalysisResult, pet_header: Dataset,
                   superseded: Result | None = None) -> list[OutboxItem]:
    """Build, write and queue the SR and the SC series of one analysis; the caller commits."""
    if result_row.id is None:
        session.add(result_row)
        session.flush()
    now = dt.datetime.now(dt.timezone.utc)
    clock = time.monotonic()
    study_uid = pet_header.StudyInstanceUID
    sr_series_uid, sr_uid, sc_series_uid = generate_uid(), generate_uid(), generate_uid()
    results = settings.results
    sr = build_sr(analysis, _evidence(session, study, analysis, pet_header), results,
                  series_uid=sr_series_uid, sop_uid=sr_uid,
                  previous=_predecessor(session, superseded, study_uid))
    facts = PanelFacts(accession_number=str(pet_header.get("AccessionNumber", "") or ""),
                       study_date=str(pet_header.get("StudyDate", "") or ""), analysed_at=now)
    pictures = render_all(analysis, facts)
    scs = build_sc_series(pictures, pet_header, results, sc_series_uid, analysis.software_version,
                          device_uid(analysis.weights_sha256, analysis.software_version))
    folder = settings.storage.results_directory / study_uid / f"result-{result_row.id}"
    objects: list[tuple[Dataset, Path]] = [(sr, folder / f"SR-{sr_uid}.dcm")]
    objects += [(sc, folder / f"SC-{sc.SOPInstanceUID}.dcm") for sc in scs]
    for dataset, path in objects:
        write_durably(dataset, path)

    result_row.sr_sop_instance_uid = sr_uid
    result_row.sc_series_uid = sc_series_uid
    result_row.summary = {**(result_row.summary or {}), "sr_series_uid": sr_series_uid,
                          "sr_sop_class_uid": str(sr.SOPClassUID), "sc_count": len(scs),
                          "results_folder": str(folder)}
    destinations = destinations_for(session, settings, study)
    items = [
        enqueue(session, result_id=result_row.id, study_uid=study_uid, destination=name, path=path,
                sop_class_uid=str(dataset.SOPClassUID), sop_instance_uid=str(dataset.SOPInstanceUID), now=now)
        for name in destinations for dataset, path in objects
    ]
    if superseded is not None:
        if superseded.superseded_by_id is None:
            superseded.superseded_by_id = result_row.id
        audit.record(session, "result", "superseded", study_uid=study_uid,
                     sop_instance_uid=superseded.sr_sop_instance_uid, superseded_result_id=superseded.id,
                     by_result_id=result_row.id, by_sr_sop_instance_uid=sr_uid)
    audit.record(
        session, "result", "published",
        outcome="ok" if destinations else "warning",
        reason=None if destinations else "no destinations configured: objects kept in results_directory",
        study_uid=study_uid, series_uid=sc_series_uid, sop_instance_uid=sr_uid,
        result_id=result_row.id, finding=analysis.finding.value, probability=analysis.probability,
        classifier_run=analysis.classifier_run, sr_sop_class_uid=str(sr.SOPClassUID),
        sr_series_uid=sr_series_uid, sc_instances=len(scs), destinations=destinations,
        outbox_items=len(items), folder=str(folder), elapsed_s=round(time.monotonic() - clock, 3),
    )
    log.info("result published", extra={"study_uid": study_uid, "result_id": result_row.id,
                                         "finding": analysis.finding.value, "objects": len(objects),
                                         "destinations": ",".join(destinations)})
    return items
