"""The instance store: the one entry point the receiver calls for each C-STORE request.

`InstanceStore.receive` makes a received data set durable and answers with the status to send: success only
once the file is fsynced and renamed into place and its row committed, so a success survives a crash;
anything else is a refusal with a specific status and reason. Rows of instances arriving at the same moment
on several associations share one commit (`GroupCommit`).
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Update, bindparam, case, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db import audit
from db.clock import utcnow
from db.models import Instance, Study, StudyState
from dicom_node.config import Settings
from dicom_node.store.durable import Staged, StorageFolder, intact
from dicom_node.store.file_meta import received_file
from dicom_node.store.headers import ParsedInstance, clean_text, parse_instance
from dicom_node.store.locks import ProcessSharedLock, SopInstanceLocks, sqlite_commit_lock
from dicom_node.store.status import (
    STATUS_NOT_THE_SOP_CLASS,
    STATUS_OUT_OF_RESOURCES,
    STATUS_PROCESSING_FAILURE,
    STATUS_SUCCESS,
    InstanceRefused,
)

log = logging.getLogger(__name__)


@dataclass
class Caller:
    """Who sends on one association, for the study row and the audit trail, and the study row ids (by
    Study Instance UID) it delivered instances of: spares a lookup per instance, and tells the receiver
    which studies to report when the association ends."""

    ae_title: str
    host: str
    study_ids: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    """One C-STORE request as received: the UIDs the request states, the presentation context's abstract
    and transfer syntaxes, and the encoded data set (without file meta)."""

    sop_class_uid: str
    sop_instance_uid: str
    context_sop_class_uid: str
    transfer_syntax_uid: str
    dataset: bytes | memoryview


@dataclass(frozen=True)
class StoreOutcome:
    """What happened to one received instance, and the C-STORE status that answers it."""

    kind: str  # "stored", "duplicate", "revised", "restored" or "refused"
    status: int = STATUS_SUCCESS
    instance: ParsedInstance | None = None  # None when refused
    path: Path | None = None
    revision: int | None = None
    reason: str | None = None  # why refused

    @classmethod
    def refused(cls, status: int, reason: str) -> StoreOutcome:
        return cls("refused", status=status, reason=reason)


class InstanceStore:
    """Stores instances durably and records them; one per receiving process, shared by associations."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.folder = StorageFolder(settings.storage.directory)
        self.engine = sessions.kw["bind"]
        # Three background tasks per instance in flight (write+flush, hash, folder flush), none waiting
        # for another, so any pool size is deadlock-free; this one never makes an association queue.
        self._syncer = ThreadPoolExecutor(max_workers=3 * settings.node.max_associations + 4,
                                          thread_name_prefix="storage-flush")
        # One SOP Instance UID is never handled by two associations at once, in any receiving process.
        self._sop_lock = SopInstanceLocks(settings.storage.directory)
        database = self.engine.url.database
        shared = self.engine.dialect.name == "sqlite" and database not in (None, "", ":memory:")
        self._commits = GroupCommit(self.engine, sqlite_commit_lock(Path(database)) if shared else None)

    def close(self) -> None:
        """Wait for folder flushes still running (only during shutdown)."""
        self._syncer.shutdown(wait=True)

    def receive(self, delivery: Delivery, caller: Caller) -> StoreOutcome:
        """Store one C-STORE request's data set and say what to answer; never raises for bad input.

        Writing, flushing and hashing the bytes start at once and overlap header parsing; the file is then
        renamed into place and its row committed. Success comes back only when both are durable; a
        refusal carries its status and reason, which the receiver audits and answers with.
        """
        try:
            self._check_resources(memoryview(delivery.dataset).nbytes)
            if delivery.sop_class_uid != delivery.context_sop_class_uid:
                raise InstanceRefused(
                    STATUS_NOT_THE_SOP_CLASS,
                    f"SOP Class UID {delivery.sop_class_uid} sent on a presentation context for "
                    f"{delivery.context_sop_class_uid}",
                )
            data = received_file(delivery.sop_class_uid, delivery.sop_instance_uid,
                                 delivery.transfer_syntax_uid, delivery.dataset)
            with self._staging(data) as staged:
                parsed = parse_instance(data, delivery.sop_class_uid, delivery.sop_instance_uid)
                return self._store(parsed, data, caller, staged)
        except InstanceRefused as exc:
            return StoreOutcome.refused(exc.status, exc.reason)
        except OSError as exc:
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
            log.exception("cannot write instance", extra={"sop_instance_uid": delivery.sop_instance_uid})
            return StoreOutcome.refused(STATUS_OUT_OF_RESOURCES if full else STATUS_PROCESSING_FAILURE,
                                        f"storage error: {exc}")
        except Exception as exc:
            log.exception("cannot store instance", extra={"sop_instance_uid": delivery.sop_instance_uid})
            return StoreOutcome.refused(STATUS_PROCESSING_FAILURE,
                                        f"internal error: {type(exc).__name__}: {exc}")

    def _check_resources(self, size: int) -> None:
        node = self.settings.node
        if size > node.max_instance_bytes:
            raise InstanceRefused(
                STATUS_OUT_OF_RESOURCES,
                f"instance of {size} bytes exceeds max_instance_bytes {node.max_instance_bytes}",
            )
        root = self.settings.storage.directory
        if not root.is_dir():  # removed while running: recreate rather than fail every instance
            root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
        if free - size < node.min_free_disk_mb * 1024 * 1024:
            raise InstanceRefused(
                STATUS_OUT_OF_RESOURCES,
                f"free disk {free // (1024 * 1024)} MB below min_free_disk_mb {node.min_free_disk_mb}",
            )

    @contextmanager
    def _staging(self, data: bytes) -> Iterator[Staged]:
        """Start writing, flushing and hashing the received bytes in the background right away, so that
        this work overlaps header parsing; the temporary file is removed on exit unless it was placed."""
        staged = Staged(self.folder, data, self._syncer)
        try:
            yield staged
        finally:
            temporary = staged.settle()
            if temporary is not None and not staged.placed:
                temporary.unlink(missing_ok=True)

    def _store(self, parsed: ParsedInstance, data: bytes, caller: Caller, staged: Staged) -> StoreOutcome:
        """Place the staged file and commit its row; returns only when both are durable."""
        with self._sop_lock(parsed.sop_instance_uid):
            first_path = self.folder.path_for(parsed, 1, "")
            if not os.path.lexists(first_path):
                outcome = self._store_new(parsed, data, caller, staged, first_path)
                if outcome is not None:
                    return outcome
            return self._store_known(parsed, data, caller, staged)

    def _store_new(self, parsed: ParsedInstance, data: bytes, caller: Caller, staged: Staged,
                   path: Path) -> StoreOutcome | None:
        """The common case, an instance never seen (its revision-1 file does not exist): no lookup first.

        The complete file is renamed into place before its row is committed, so no row ever points to a
        missing or partly written file while the node runs. The three disk flushes (file data, folder
        entry, database commit) then run at once, and success is answered only after all three: the sum
        of their latencies would otherwise dominate the time per instance. A power loss before the
        answer can leave a committed row whose file is short or empty (ext4/XFS never show a full-length
        file with other content): `reconcile_storage` flags it by its size, and the re-send the
        unanswered sender makes restores it. Returns None when a row for revision 1 exists after all
        (its file went missing); the general path then handles the instance.
        """
        temporary = staged.written()
        self.folder.place(temporary, path)
        staged.placed = True
        folder_synced = self._syncer.submit(self.folder.sync_folder, path)
        try:
            self._record(parsed, caller, path, len(data), staged.digest(), 1, None)
        except IntegrityError:
            futures_wait([folder_synced])
            os.replace(path, temporary)  # back to staging, as if never placed
            staged.placed = False
            return None
        except BaseException:
            futures_wait([folder_synced])
            path.unlink(missing_ok=True)
            raise
        try:
            staged.flushed()
            folder_synced.result()
        except BaseException as exc:
            self._unflushed(parsed, caller, path, exc)
            raise
        return StoreOutcome("stored", instance=parsed, path=path, revision=1)

    def _unflushed(self, parsed: ParsedInstance, caller: Caller, path: Path, exc: BaseException) -> None:
        """A committed row whose file could not be flushed: the instance is refused, so its file goes and
        its row is flagged missing; the sender's re-send restores it through the usual path."""
        path.unlink(missing_ok=True)

        def flag(connection: Connection) -> None:
            connection.execute(update(Instance).where(Instance.path == str(path)).values(missing_file=True))
            with Session(bind=connection) as session:  # joins the connection's transaction
                audit.record(session, "instance", "file-missing", outcome="error",
                             reason=clean_text(f"stored file could not be flushed: {exc}"),
                             study_uid=parsed.study_uid, series_uid=parsed.series_uid,
                             sop_instance_uid=parsed.sop_instance_uid, actor=caller.ae_title,
                             peer=caller.host, path=str(path))
                session.flush()

        self._commits.run(flag)

    def _store_known(self, parsed: ParsedInstance, data: bytes, caller: Caller,
                     staged: Staged) -> StoreOutcome:
        """An instance with an earlier revision: identical content is a duplicate (or restores a missing
        file), different content a new revision. Rare, so kept simple: the file is flushed first."""
        with self.engine.connect() as connection:
            current = connection.execute(_CURRENT_REVISION, {"sop": parsed.sop_instance_uid}).first()
        temporary = staged.written()
        sha256 = staged.digest()
        staged.flushed()
        if current is not None and current.sha256 == sha256:
            if not current.missing_file and intact(Path(current.path), current.size_bytes):
                return StoreOutcome("duplicate", instance=parsed, path=Path(current.path),
                                    revision=current.revision)
            outcome = self._restore(parsed, temporary, caller, current.id, Path(current.path),
                                    current.revision)
            staged.placed = True
            return outcome
        revision = 1 if current is None else current.revision + 1
        path = self.folder.path_for(parsed, revision, sha256)
        self.folder.place(temporary, path)
        staged.placed = True
        # The folder fsync making the rename durable runs while the row is committed; success is
        # answered only after both.
        folder_synced = self._syncer.submit(self.folder.sync_folder, path)
        try:
            self._record(parsed, caller, path, len(data), sha256, revision,
                         None if current is None else current.id)
        except BaseException:
            futures_wait([folder_synced])
            path.unlink(missing_ok=True)
            raise
        folder_synced.result()
        return StoreOutcome("stored" if revision == 1 else "revised", instance=parsed, path=path,
                            revision=revision)

    def _restore(self, parsed: ParsedInstance, temporary: Path, caller: Caller, instance_id: int,
                 path: Path, revision: int) -> StoreOutcome:
        """The same content again for a row whose file went missing: put the file back."""
        self.folder.place(temporary, path)
        self.folder.sync_folder(path)

        def unflag(connection: Connection) -> None:
            connection.execute(update(Instance).where(Instance.id == instance_id).values(missing_file=False))
            with Session(bind=connection) as session:  # joins the connection's transaction
                audit.record(session, "instance", "restored", reason="file was missing; same content re-sent",
                             study_uid=parsed.study_uid, series_uid=parsed.series_uid,
                             sop_instance_uid=parsed.sop_instance_uid, actor=caller.ae_title,
                             peer=caller.host)
                session.flush()

        self._commits.run(unflag)
        return StoreOutcome("restored", instance=parsed, path=path, revision=revision)

    def _study_id(self, parsed: ParsedInstance, caller: Caller) -> int:
        """The study's row id, creating the row (own short transaction) on its first instance."""
        cached = caller.study_ids.get(parsed.study_uid)
        if cached is None:
            cached = caller.study_ids[parsed.study_uid] = ensure_study(self.sessions, parsed, caller)
        return cached

    def _record(self, parsed: ParsedInstance, caller: Caller, path: Path,
                size: int, sha256: str, revision: int, previous_id: int | None) -> None:
        """Commit the instance row and the study's update (see `GroupCommit`); everything else (file I/O,
        hashing, parsing) happens outside the transaction. The study update comes first so SQLite takes
        its write lock at once; plain Core statements keep the per-instance overhead down, and the audit
        row of a revision goes through a session bound to the same connection and transaction.
        """
        for attempt in (1, 2):
            study_id = self._study_id(parsed, caller)
            now = utcnow()
            values = instance_values(parsed, study_id, path, size, sha256, revision, caller.ae_title, now)
            added = 1 if previous_id is None else 0
            if parsed.analysable:
                touch_study, touch = _TOUCH_STUDY, {
                    "study_id": study_id, "accession_number": parsed.accession_number,
                    "patient_id": parsed.patient_id, "patient_name": parsed.patient_name,
                    "study_date": parsed.study_date, "calling_ae": caller.ae_title[:16],
                    "calling_host": caller.host[:64], "now": now, "added": added,
                }
            else:
                touch_study, touch = COUNT_OTHER_OBJECT, {"study_id": study_id, "added": added}

            audit_fields = {"study_uid": parsed.study_uid, "series_uid": parsed.series_uid,
                            "sop_instance_uid": parsed.sop_instance_uid, "actor": caller.ae_title,
                            "peer": caller.host, "revision": revision, "sha256": sha256}
            write = partial(_write_rows, touch_study=touch_study, touch=touch, values=values,
                            previous_id=previous_id, audit_fields=audit_fields)
            try:
                self._commits.run(write)
                return
            except _StudyVanished:
                caller.study_ids.pop(parsed.study_uid, None)
                if attempt == 2:
                    raise RuntimeError(f"study row for {parsed.study_uid} vanished while storing") from None


def _write_rows(connection: Connection, touch_study: Update, touch: dict[str, Any], values: dict[str, Any],
                previous_id: int | None, audit_fields: dict[str, Any]) -> None:
    """One instance's statements: touch the study, retire the previous revision (audited), insert."""
    if connection.execute(touch_study, touch).rowcount == 0:
        raise _StudyVanished(audit_fields["study_uid"])
    if previous_id is not None:
        connection.execute(update(Instance).where(Instance.id == previous_id).values(current=False))
        with Session(bind=connection) as session:  # joins the connection's transaction
            audit.record(session, "instance", "revised", reason="re-sent with different content", **audit_fields)
            session.flush()
    connection.execute(_INSERT_INSTANCE, values)


class _StudyVanished(Exception):
    """The cached study row id no longer exists (the study was deleted meanwhile)."""


class _Ticket:
    """One transaction's statements waiting in a `GroupCommit`."""

    __slots__ = ("done", "error", "work")

    def __init__(self, work: Callable[[Connection], None]) -> None:
        self.work = work
        self.done = False
        self.error: BaseException | None = None


class GroupCommit:
    """Runs the row writes of instances arriving at the same moment on several associations in one
    transaction: one commit, one disk flush for all of them (database group commit).

    A commit takes a disk flush (~0.2-1 ms) and SQLite lets one writer in at a time, so with several
    associations each commit used to wait for the others in turn. Here each writer queues its
    statements; whoever gets the leader lock commits everything queued so far, and the others find theirs
    done when they get the lock. Queueing on our own lock also hands the database over the moment a commit
    ends, where SQLite's busy handler would sleep for milliseconds. If a batch fails, its members are
    retried one transaction each, so one bad row only fails its own instance. Every caller returns only
    after its own statements are committed. On SQLite the leaders of several receiving processes queue
    likewise, on `between_processes`.
    """

    def __init__(self, engine: Engine, between_processes: ProcessSharedLock | None = None) -> None:
        self._engine = engine
        self._between_processes = between_processes or nullcontext()
        self._leader = threading.Lock()
        self._queue_lock = threading.Lock()
        self._pending: list[_Ticket] = []

    def run(self, work: Callable[[Connection], None]) -> None:
        """Execute `work` in a committed transaction (possibly shared with others); raises what it raised."""
        ticket = _Ticket(work)
        with self._queue_lock:
            self._pending.append(ticket)
        with self._leader:
            if not ticket.done:
                with self._queue_lock:
                    batch, self._pending = self._pending, []
                with self._between_processes:
                    self._commit(batch)
        if ticket.error is not None:
            raise ticket.error

    def _commit(self, batch: list[_Ticket]) -> None:
        if len(batch) > 1:
            try:
                with self._engine.begin() as connection:
                    for ticket in batch:
                        ticket.work(connection)
            except Exception:
                log.debug("group commit failed; committing its members one by one", exc_info=True)
            else:
                for ticket in batch:
                    ticket.done = True
                return
        for ticket in batch:
            try:
                with self._engine.begin() as connection:
                    ticket.work(connection)
            except Exception as exc:  # noqa: BLE001 - handed to the caller whose statements failed
                ticket.error = exc
            ticket.done = True


# Statements built once (SQLAlchemy caches their compiled form): they run for every received instance.
_CURRENT_REVISION = (
    select(Instance.id, Instance.sha256, Instance.revision, Instance.path, Instance.missing_file,
           Instance.size_bytes)
    .where(Instance.sop_instance_uid == bindparam("sop"), Instance.current.is_(True))
)
_TOUCH_STUDY = update(Study).where(Study.id == bindparam("study_id")).values(
    accession_number=bindparam("accession_number"), patient_id=bindparam("patient_id"),
    patient_name=bindparam("patient_name"), study_date=bindparam("study_date"),
    calling_ae=bindparam("calling_ae"), calling_host=bindparam("calling_host"),
    last_received_at=bindparam("now"), instance_count=Study.instance_count + bindparam("added"),
)
COUNT_OTHER_OBJECT = update(Study).where(Study.id == bindparam("study_id")).values(
    instance_count=Study.instance_count + bindparam("added"),
    assessed_instance_count=case(
        (Study.state == StudyState.RECEIVING.value, Study.assessed_instance_count),
        else_=Study.assessed_instance_count + bindparam("added"),
    ),
)
"""An object the analysis does not read (a reader's SR, a presentation state, the node's own results coming
back): counted, but it neither reopens a settled study nor stretches a receiving one's quiet period, and the
study's patient, accession and sender stay those of its images. A settled study's assessed count moves with
it, so `study_state.reopen_candidates` sees no change; a receiving study's is set when assembly decides."""
_INSERT_INSTANCE = insert(Instance)


def instance_values(parsed: ParsedInstance, study_id: int, path: Path, size: int, sha256: str,
                    revision: int, calling_ae: str | None, now: dt.datetime) -> dict[str, Any]:
    """An instance row's columns; shared with start-up adoption, so both fill the row alike."""
    return {
        "study_id": study_id, "study_uid": parsed.study_uid, "series_uid": parsed.series_uid,
        "sop_instance_uid": parsed.sop_instance_uid, "sop_class_uid": parsed.sop_class_uid,
        "transfer_syntax_uid": parsed.transfer_syntax_uid[:64], "revision": revision, "current": True,
        "path": str(path), "size_bytes": size, "sha256": sha256, "analysable": parsed.analysable,
        "missing_file": False, "modality": parsed.modality,
        "frame_of_reference_uid": parsed.frame_of_reference_uid, "instance_number": parsed.instance_number,
        "image_index": parsed.image_index, "number_of_slices": parsed.number_of_slices,
        "number_of_time_slices": parsed.number_of_time_slices, "slice_position": parsed.slice_position,
        "header": parsed.header, "calling_ae": (calling_ae or "")[:16] or None, "received_at": now,
    }


def ensure_study(sessions: sessionmaker[Session], parsed: ParsedInstance, caller: Caller | None) -> int:
    """The study's row id; a missing row is created (state "receiving") in its own short transaction."""
    with sessions() as session:
        found = session.execute(select(Study.id).where(Study.study_uid == parsed.study_uid)).scalar()
    if found is not None:
        return int(found)
    now = utcnow()
    try:
        with sessions.begin() as session:
            study_id = session.execute(insert(Study).values(
                study_uid=parsed.study_uid, accession_number=parsed.accession_number,
                patient_id=parsed.patient_id, patient_name=parsed.patient_name, study_date=parsed.study_date,
                calling_ae=caller.ae_title[:16] if caller else None,
                calling_host=caller.host[:64] if caller else None, instance_count=0,
                first_received_at=now, last_received_at=now, state_changed_at=now,
            ).returning(Study.id)).scalar_one()
            audit.record(session, "study", "created", reason=None if caller else "adopted at start-up",
                         study_uid=parsed.study_uid, actor=caller.ae_title if caller else None,
                         peer=caller.host if caller else None)
            return int(study_id)
    except IntegrityError:
        # Another association created it at the same moment (unique study_uid): use that row.
        with sessions() as session:
            found = session.execute(select(Study.id).where(Study.study_uid == parsed.study_uid)).scalar_one()
            return int(found)

