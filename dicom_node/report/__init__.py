"""The report stage: turn an analysis into an SR, a SEG and a Secondary Capture series, durably, and queue.

`publish_result` runs inside the worker's transaction: the files are written and fsynced first, then the
outbox rows are added to the caller's session, so once the caller commits, every object to deliver exists
both as a row and as a file before the sender's first attempt (and neither exists if the commit fails,
apart from orphan files that nothing references).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from db import audit
from db.models import Instance, OutboxItem, Result, Study
from dicom_node.config import ResultSettings, Settings
from dicom_node.outbox import enqueue, sender_destination
from dicom_node.report.render import PanelFacts, render_all
from dicom_node.report.sc import build_sc_series
from dicom_node.report.seg import build_seg
from dicom_node.report.sr import build_sr, device_uid
from dicom_node.store import write_durably
from inference.result import AnalysisResult

log = logging.getLogger(__name__)

__all__ = ["publish_result"]


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


def _series_headers(session: Session, study: Study, series_uid: str) -> tuple[list[Dataset], str]:
    """Headers (no pixels) of every current instance of one analysed series, or none and why not.

    All or nothing: with an instance missing, the nearest image to a focus could be the wrong one, so the
    SR and SEG would rather carry no image references than misplaced ones.
    """
    if study.id is None or not series_uid:
        return [], ""
    paths = session.scalars(
        select(Instance.path)
        .where(Instance.study_id == study.id, Instance.series_uid == series_uid, Instance.current.is_(True))
        .order_by(Instance.instance_number)
    ).all()
    headers: list[Dataset] = []
    for path in paths:
        try:
            headers.append(dcmread(path, stop_before_pixels=True))
        except (OSError, InvalidDicomError, EOFError, ValueError) as exc:
            return [], f"{Path(path).name}: {type(exc).__name__}: {exc}"
    return headers, ""


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
    """Configured destinations, plus the sender when return_to_sender is on and its port is known.

    In shadow mode only the evaluation destinations: a result made while a site validates the model never
    reaches a clinical PACS, nor the sender (which is usually one)."""
    if settings.results.mode == "shadow":
        names = [d.name for d in settings.results.destinations if d.evaluation]
        withheld = [d.name for d in settings.results.destinations if not d.evaluation]
        if settings.results.return_to_sender:
            withheld.append(f"the sender {study.calling_ae or '(unknown)'}")
        audit.record(session, "result", "shadow-mode", reason="results.mode shadow: sent only to evaluation "
                     f"destinations ({', '.join(names) or 'none'}); withheld from {', '.join(withheld) or 'none'}",
                     study_uid=study.study_uid, destinations=names, withheld=withheld)
        return names
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


def _segmentation(session: Session, analysis: AnalysisResult, pet_headers: list[Dataset],
                  results: ResultSettings, study_uid: str, result_row: Result, series_uid: str, sop_uid: str,
                  device: str, supersedes: str | None) -> tuple[Dataset | None, dict[str, int]]:
    """The SEG when it is enabled and there is something to show; a SEG that cannot be built is audited and
    left out, so the SR and the SC still reach the radiologist."""
    if not results.seg_enabled:
        return None, {}
    try:
        built = build_seg(analysis, pet_headers, results, series_uid=series_uid, sop_uid=sop_uid,
                          device_uid=device, supersedes=supersedes)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:  # highdicom on odd source headers
        reason = f"SEG not built: {type(exc).__name__}: {exc}"
        log.warning("segmentation not built", extra={"study_uid": study_uid, "reason": reason})
        audit.record(session, "result", "segmentation-skipped", outcome="warning", reason=reason,
                     study_uid=study_uid, result_id=result_row.id)
        return None, {}
    return built if built is not None else (None, {})


def publish_result(session: Session, settings: Settings, study: Study, result_row: Result,
                   analysis: AnalysisResult, pet_header: Dataset,
                   superseded: Result | None = None) -> list[OutboxItem]:
    """Build, write and queue the SR, the SEG and the SC series of one analysis; the caller commits."""
    if result_row.id is None:
        session.add(result_row)
        session.flush()
    now = dt.datetime.now(dt.timezone.utc)
    clock = time.monotonic()
    study_uid = pet_header.StudyInstanceUID
    sr_series_uid, sr_uid, sc_series_uid = generate_uid(), generate_uid(), generate_uid()
    results = settings.results
    headers: dict[str, list[Dataset]] = {}
    for label, series_uid in (("PET", analysis.pet_series_uid), ("CT", analysis.ct_series_uid)):
        if analysis.series_headers.get(series_uid):  # the analysis read them already: no second pass
            headers[label] = list(analysis.series_headers[series_uid])
            continue
        headers[label], problem = _series_headers(session, study, series_uid)
        if problem:
            reason = (f"{label} series {series_uid}: instance header unreadable ({problem}); "
                      "results carry no image coordinates or SEG frames on it")
            log.warning("analysed instance unreadable", extra={"study_uid": study_uid, "series_uid": series_uid,
                                                               "reason": reason})
            audit.record(session, "result", "image-references-skipped", outcome="warning", reason=reason,
                         study_uid=study_uid, series_uid=series_uid, result_id=result_row.id)
    uid = device_uid(analysis.weights_sha256, analysis.software_version)
    previous_seg = (superseded.summary or {}).get("seg_sop_instance_uid") if superseded is not None else None
    seg_series_uid, seg_uid = generate_uid(), generate_uid()
    seg, segment_numbers = _segmentation(session, analysis, headers["PET"], results, study_uid, result_row,
                                         seg_series_uid, seg_uid, uid, previous_seg)
    sr = build_sr(analysis, _evidence(session, study, analysis, pet_header), results,
                  series_uid=sr_series_uid, sop_uid=sr_uid,
                  previous=_predecessor(session, superseded, study_uid),
                  pet_headers=headers["PET"], ct_headers=headers["CT"],
                  segmentation=seg, segment_numbers=segment_numbers)
    facts = PanelFacts(accession_number=str(pet_header.get("AccessionNumber", "") or ""),
                       study_date=str(pet_header.get("StudyDate", "") or ""), analysed_at=now)
    pictures = render_all(analysis, facts)
    scs = build_sc_series(pictures, pet_header, results, sc_series_uid, analysis.software_version, uid)
    folder = settings.storage.results_directory / study_uid / f"result-{result_row.id}"
    objects: list[tuple[Dataset, Path]] = [(sr, folder / f"SR-{sr_uid}.dcm")]
    if seg is not None:
        objects.append((seg, folder / f"SEG-{seg_uid}.dcm"))
    objects += [(sc, folder / f"SC-{sc.SOPInstanceUID}.dcm") for sc in scs]
    for dataset, path in objects:
        encoded = BytesIO()
        dataset.save_as(encoded, enforce_file_format=True)
        write_durably(path, encoded.getbuffer())

    result_row.sr_sop_instance_uid = sr_uid
    result_row.sc_series_uid = sc_series_uid
    result_row.summary = {**(result_row.summary or {}), "sr_series_uid": sr_series_uid,
                          "sr_sop_class_uid": str(sr.SOPClassUID), "sc_count": len(scs),
                          "seg_sop_instance_uid": seg_uid if seg is not None else None,
                          "seg_series_uid": seg_series_uid if seg is not None else None,
                          "seg_segments": dict(segment_numbers),
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
                     by_result_id=result_row.id, by_sr_sop_instance_uid=sr_uid,
                     superseded_seg_sop_instance_uid=previous_seg,
                     by_seg_sop_instance_uid=seg_uid if seg is not None else None)
    audit.record(
        session, "result", "published",
        outcome="ok" if destinations else "warning",
        reason=None if destinations else "no destinations configured: objects kept in results_directory",
        study_uid=study_uid, series_uid=sc_series_uid, sop_instance_uid=sr_uid,
        result_id=result_row.id, finding=analysis.finding.value, probability=analysis.probability,
        classifier_run=analysis.classifier_run, sr_sop_class_uid=str(sr.SOPClassUID),
        sr_series_uid=sr_series_uid, sc_instances=len(scs), destinations=destinations,
        seg_sop_instance_uid=seg_uid if seg is not None else None,
        seg_series_uid=seg_series_uid if seg is not None else None, seg_segments=dict(segment_numbers),
        outbox_items=len(items), folder=str(folder), elapsed_s=round(time.monotonic() - clock, 3),
    )
    log.info("result published", extra={"study_uid": study_uid, "result_id": result_row.id,
                                         "finding": analysis.finding.value, "objects": len(objects),
                                         "destinations": ",".join(destinations)})
    return items
