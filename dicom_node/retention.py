"""Retention: delete the stored images of studies whose results were delivered long enough ago.

Only instance files go; every row stays (the study is marked purged_at, its instances missing_file) and the
audit trail keeps the whole story. A study qualifies when it is done, every outbox item of it is delivered
or confirmed, and the last delivery is older than retention.keep_days. Studies that failed, were rejected
or were reopened by new data are never purged automatically: an admin may still need their images.

Records are never deleted, here or anywhere else in the node: results, their descriptors, reader
assessments, reference standards and the audit trail outlive the images (`retention.keep_records_days`,
at least six months, EU AI Act Art. 26(6), is what a site's own archiving must honour). Retention only
deletes files, and the only rows it changes are a study's purged_at and its instances' missing_file flags.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from db.audit import record
from db.clock import utcnow
from db.models import Instance, OutboxItem, OutboxState, Study, StudyState
from db.session import transaction
from dicom_node.config import Settings

log = logging.getLogger(__name__)

DELIVERED = (OutboxState.DELIVERED.value, OutboxState.CONFIRMED.value)


@dataclass
class Candidate:
    """A study whose images retention would delete, with what would go."""

    study_uid: str
    accession_number: str | None
    delivered_at: dt.datetime
    files: list[Path] = field(default_factory=list)
    bytes: int = 0


@dataclass
class RetentionReport:
    dry_run: bool
    cutoff: dt.datetime
    studies: list[Candidate] = field(default_factory=list)
    files_deleted: int = 0
    bytes_freed: int = 0
    errors: list[str] = field(default_factory=list)


def _delivered_before(session: Session, cutoff: dt.datetime) -> list[tuple[Study, dt.datetime]]:
    """Done, unpurged studies whose outbox is fully delivered, last delivery before `cutoff`."""
    last_delivery = func.max(func.coalesce(OutboxItem.delivered_at, OutboxItem.confirmed_at))
    undelivered = func.sum(case((OutboxItem.state.in_(DELIVERED), 0), else_=1))
    rows = session.execute(
        select(Study, last_delivery)
        .join(OutboxItem, OutboxItem.study_uid == Study.study_uid)
        .where(Study.state == StudyState.DONE.value, Study.purged_at.is_(None))
        .group_by(Study.id)
        .having(undelivered == 0, last_delivery < cutoff)
        .order_by(Study.id)
    )
    return [(study, delivered) for study, delivered in rows]  # type: ignore[misc]


def _files(session: Session, study: Study) -> tuple[list[Path], int]:
    paths, total = [], 0
    for path, size in session.execute(
        select(Instance.path, Instance.size_bytes).where(
            Instance.study_id == study.id, Instance.missing_file.is_(False)
        )
    ):
        paths.append(Path(path))
        total += int(size or 0)
    return paths, total


def _prune_dirs(files: list[Path], root: Path) -> None:
    """Remove folders the purge left empty (series, then study), never the storage root itself."""
    for folder in sorted(
        {f.parent for f in files} | {f.parent.parent for f in files}, key=lambda p: -len(p.parts)
    ):
        if folder.resolve() != root.resolve() and root.resolve() in folder.resolve().parents:
            try:
                folder.rmdir()
            except OSError:
                pass


def run_retention(
    settings: Settings,
    sessions: sessionmaker[Session],
    *,
    dry_run: bool,
    actor: str,
    keep_days: float | None = None,
    now: dt.datetime | None = None,
) -> RetentionReport:
    """Purge (or with dry_run only list) the images of every qualifying study; one transaction per study."""
    now = now or utcnow()
    days = settings.retention.keep_days if keep_days is None else keep_days
    cutoff = now - dt.timedelta(days=days)
    report = RetentionReport(dry_run=dry_run, cutoff=cutoff)
    with sessions() as session:
        found = [(study.id, delivered) for study, delivered in _delivered_before(session, cutoff)]
    storage = Path(settings.storage.directory)
    for study_id, delivered in found:
        with transaction(sessions) as session:
            study = session.get(Study, study_id, with_for_update=True)
            if study is None or study.state != StudyState.DONE.value or study.purged_at is not None:
                continue  # reopened or purged since the candidates were listed
            files, size = _files(session, study)
            candidate = Candidate(study.study_uid, study.accession_number, delivered, files, size)
            report.studies.append(candidate)
            if dry_run:
                continue
            deleted, errors = 0, []
            for path in files:
                try:
                    path.unlink(missing_ok=True)
                    deleted += 1
                except OSError as exc:
                    errors.append(f"{path}: {exc.strerror or exc}")
            _prune_dirs(files, storage)
            if errors:
                report.errors.extend(errors)
                record(
                    session,
                    "study",
                    "purge-failed",
                    outcome="failed",
                    study_uid=study.study_uid,
                    actor=actor,
                    reason=f"{len(errors)} file(s) could not be deleted: {errors[0]}",
                    files_deleted=deleted,
                )
                log.error(
                    "retention could not delete files",
                    extra={"study_uid": study.study_uid, "errors": len(errors)},
                )
                continue
            study.purged_at = now
            for instance in session.scalars(select(Instance).where(Instance.study_id == study.id)):
                instance.missing_file = True
            record(
                session,
                "study",
                "purged",
                study_uid=study.study_uid,
                actor=actor,
                reason=f"results delivered {delivered.isoformat()}, older than {days:g} days",
                files_deleted=deleted,
                bytes_freed=size,
                keep_days=days,
                records_kept_days=settings.retention.keep_records_days,
            )
            report.files_deleted += deleted
            report.bytes_freed += size
            log.info(
                "study images purged", extra={"study_uid": study.study_uid, "files": deleted, "bytes": size}
            )
    return report


def retention_tick(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """Purge images of delivered studies older than the retention period (scheduled by `serve`)."""
    if not settings.retention.enabled:
        return
    try:
        run_retention(settings, sessions, dry_run=False, actor=f"system:retention@{os.uname().nodename}")
    except Exception:
        log.exception("retention run failed")
