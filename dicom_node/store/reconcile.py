"""Start-up reconciliation of the storage folder with the database, after whatever crash came before.

Because a complete file is renamed into place before its row is committed, and the sender is answered only
after both are on disk, the two can disagree in three ways only: a file without a row (adopted), a row
whose file is missing or shorter than recorded (flagged, until the sender's re-send restores it), and
temporary files of interrupted writes (removed). Each correction leaves an audit row.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from db import audit
from db.clock import utcnow
from db.models import Instance, Study
from dicom_node.config import Settings
from dicom_node.store.durable import TEMP_SUFFIX, intact
from dicom_node.store.file_meta import content_digest
from dicom_node.store.headers import parse_instance
from dicom_node.store.instances import COUNT_OTHER_OBJECT, ensure_study, instance_values
from dicom_node.store.status import InstanceRefused

log = logging.getLogger(__name__)


def _walk_storage(root: Path) -> Iterator[Path]:
    for directory, _subdirs, files in os.walk(root):
        for name in files:
            yield Path(directory) / name


def reconcile_storage(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """At start-up: adopt stored files without rows, flag rows without (intact) files, remove temporary
    files; the module docstring says why these are the only disagreements a crash can leave."""
    root = settings.storage.directory
    root.mkdir(parents=True, exist_ok=True)
    with sessions() as session:
        rows = session.execute(
            select(Instance.id, Instance.path, Instance.missing_file, Instance.size_bytes)).all()
    known = {row.path for row in rows}
    adopted = removed = flagged = 0
    orphans: list[Path] = []
    for path in _walk_storage(root):
        if path.name.endswith(TEMP_SUFFIX):
            path.unlink(missing_ok=True)
            removed += 1
            with sessions.begin() as session:
                audit.record(session, "instance", "temporary-removed",
                             reason="left over by an interrupted write", path=str(path))
        elif path.suffix == ".dcm" and str(path) not in known:
            orphans.append(path)
    for path in sorted(orphans, key=lambda p: p.stat().st_mtime):
        adopted += _adopt(path, sessions)
    for row in rows:
        whole = intact(Path(row.path), row.size_bytes)
        if whole == (not row.missing_file):
            continue
        reason = None
        if not whole:
            reason = ("stored file shorter than recorded (flush cut short)" if os.path.exists(row.path)
                      else "stored file not found at start-up")
        with sessions.begin() as session:
            session.execute(update(Instance).where(Instance.id == row.id).values(missing_file=not whole))
            audit.record(session, "instance", "file-missing" if not whole else "file-restored",
                         outcome="error" if not whole else "ok", reason=reason,
                         path=row.path, instance_id=row.id)
        flagged += 1 if not whole else 0
    log.info("storage reconciled", extra={"adopted": adopted, "temporary_removed": removed,
                                          "missing_files": flagged, "rows": len(rows)})


def _adopt(path: Path, sessions: sessionmaker[Session]) -> int:
    """A file renamed into place whose row was never committed (crash in between): give it its row."""
    data = path.read_bytes()
    try:
        parsed = parse_instance(data)
    except InstanceRefused as exc:
        with sessions.begin() as session:
            audit.record(session, "instance", "adopt-failed", outcome="error", reason=exc.reason,
                         path=str(path))
        log.warning("stored file cannot be adopted", extra={"path": str(path), "reason": exc.reason})
        return 0
    sha256 = content_digest(data)
    with sessions() as session:
        latest = session.execute(
            select(Instance.sha256, Instance.revision)
            .where(Instance.sop_instance_uid == parsed.sop_instance_uid)
            .order_by(Instance.revision.desc())
        ).first()
    if latest is not None and latest.sha256 == sha256:
        return 0
    revision = 1 if latest is None else latest.revision + 1
    study_id = ensure_study(sessions, parsed, None)
    now = utcnow()
    with sessions.begin() as session:
        added = 1 if latest is None else 0
        if parsed.analysable:
            session.execute(update(Study).where(Study.id == study_id).values(
                last_received_at=now, instance_count=Study.instance_count + added))
        else:
            session.execute(COUNT_OTHER_OBJECT, {"study_id": study_id, "added": added})
        session.execute(update(Instance).where(Instance.sop_instance_uid == parsed.sop_instance_uid)
                        .values(current=False))
        session.execute(insert(Instance).values(**instance_values(
            parsed, study_id, path, len(data), sha256, revision, None, now)))
        audit.record(session, "instance", "adopted", reason="file stored without a row (interrupted receive)",
                     study_uid=parsed.study_uid, series_uid=parsed.series_uid,
                     sop_instance_uid=parsed.sop_instance_uid, path=str(path), revision=revision)
    return 1
