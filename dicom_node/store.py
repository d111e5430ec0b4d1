"""Durable storage of received instances: parse the header, write the bytes safely, record the row.

The contract with the sender is that a success status means the instance survives a crash: the bytes are
fsynced and renamed into place, and the instance row is committed, before the receiver answers. Nothing here
decodes pixel data, so the receiving process stays light.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import re
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from db import audit
from db.models import Instance, Study, utcnow
from dicom_node.config import Settings

log = logging.getLogger(__name__)

PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.130"
ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
LEGACY_ENHANCED_PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128.1"
LEGACY_ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.2"
# Classes the analysis understands; the enhanced ones are stored but later stages do not read them.
ANALYSABLE_SOP_CLASSES = frozenset({PET_IMAGE_STORAGE, CT_IMAGE_STORAGE})
PET_CT_SOP_CLASSES = ANALYSABLE_SOP_CLASSES | {
    ENHANCED_PET_IMAGE_STORAGE,
    ENHANCED_CT_IMAGE_STORAGE,
    LEGACY_ENHANCED_PET_IMAGE_STORAGE,
    LEGACY_ENHANCED_CT_IMAGE_STORAGE,
}

# Header fields copied into Instance.header; the assembly stage relies on exactly these names.
HEADER_KEYWORDS = (
    "Modality", "SOPClassUID", "SeriesInstanceUID", "SeriesNumber", "SeriesDescription", "SeriesDate",
    "SeriesTime", "AcquisitionDate", "AcquisitionTime", "ImageType", "FrameOfReferenceUID", "InstanceNumber",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "SliceThickness", "Rows", "Columns",
    "ImageIndex", "NumberOfSlices", "NumberOfTimeSlices", "SeriesType", "CorrectedImage", "Units",
    "DecayCorrection", "AccessionNumber", "StudyDescription", "AdditionalPatientHistory",
    "RequestedProcedureComments", "BodyPartExamined", "GantryDetectorTilt",
)
_RADIOPHARMACEUTICAL_FIELDS = (
    "RadiopharmaceuticalName", "RadionuclideHalfLife", "RadionuclideCodeMeaning",
    "RadiopharmaceuticalCodeMeaning",
)
_TAGS = {keyword: Tag(keyword)
         for keyword in (*HEADER_KEYWORDS, "Radiopharmaceutical", "RadionuclideHalfLife", "CodeMeaning")}
# Native (unencapsulated) transfer syntaxes, whose pixel data length can be checked against the header.
_NATIVE_SYNTAXES = frozenset({"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99",
                              "1.2.840.10008.1.2.2"})
UNDEFINED_LENGTH = 0xFFFFFFFF
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
TEMP_SUFFIX = ".tmp"
INCOMING = ".incoming"  # temporary files, on the same filesystem as their final place


class InstanceRefused(Exception):
    """An instance the node will not store; `status` is the C-STORE status, the message the reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class ParsedInstance:
    """What the node keeps of an instance's header; read without touching pixel values."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    accession_number: str | None
    patient_id: str | None
    patient_name: str | None
    study_date: str | None
    modality: str | None
    frame_of_reference_uid: str | None
    instance_number: int | None
    image_index: int | None
    number_of_slices: int | None
    number_of_time_slices: int | None
    slice_position: float | None
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def analysable(self) -> bool:
        return self.sop_class_uid in ANALYSABLE_SOP_CLASSES


def clean_text(value: str) -> str:
    """Text safe for any database column."""
    # PostgreSQL refuses NUL characters and unpaired surrogates; neither carries meaning in DICOM text.
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _json_value(keyword: str, value: Any) -> Any:
    """A header value as plain JSON data: numbers as numbers, multi-values as lists."""
    if isinstance(value, (MultiValue, list, tuple)):
        return [_json_value(keyword, item) for item in value]
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        number = float(value)
        if not math.isfinite(number):
            raise InstanceRefused(0xC000, f"{keyword} is not a finite number ({value!r})")
        return int(value) if isinstance(value, int) else number
    if isinstance(value, bytes):
        return clean_text(value.decode("ascii", "replace"))
    return clean_text(str(value))


def _element(ds: Dataset, keyword: str) -> Any:
    """A value converted to JSON data, None if absent or empty; a malformed value refuses the instance."""
    tag = _TAGS[keyword]
    try:
        if tag not in ds:
            return None
        value = ds[tag].value
    except Exception as exc:  # pydicom raises many kinds on corrupt values
        raise InstanceRefused(0xC000, f"cannot read {keyword}: {exc}") from exc
    if value is None or value == "" or (isinstance(value, (MultiValue, list)) and len(value) == 0):
        return None
    return _json_value(keyword, value)


def _first_item(ds: Dataset, keyword: str) -> Dataset | None:
    try:
        sequence = ds.get(keyword)
        return sequence[0] if sequence else None
    except Exception as exc:
        raise InstanceRefused(0xC000, f"cannot read {keyword}: {exc}") from exc


def _radiopharmaceutical(ds: Dataset) -> dict[str, Any]:
    item = _first_item(ds, "RadiopharmaceuticalInformationSequence")
    if item is None:
        return {}
    fields: dict[str, Any] = {
        "RadiopharmaceuticalName": _element(item, "Radiopharmaceutical"),
        "RadionuclideHalfLife": _element(item, "RadionuclideHalfLife"),
    }
    nuclide = _first_item(item, "RadionuclideCodeSequence")
    if nuclide is not None:
        fields["RadionuclideCodeMeaning"] = _element(nuclide, "CodeMeaning")
    pharmaceutical = _first_item(item, "RadiopharmaceuticalCodeSequence")
    if pharmaceutical is not None:
        fields["RadiopharmaceuticalCodeMeaning"] = _element(pharmaceutical, "CodeMeaning")
    return fields


def _as_int(header: dict[str, Any], keyword: str) -> int | None:
    value = header.get(keyword)
    if value is None:
        return None
    if isinstance(value, list):
        value = value[0] if value else None
    if not isinstance(value, (int, float)):
        raise InstanceRefused(0xC000, f"{keyword} is not a number ({value!r})")
    if abs(value) >= 2**31:
        raise InstanceRefused(0xC000, f"{keyword} out of range ({value!r})")
    return int(value)


def _numbers(header: dict[str, Any], keyword: str, count: int) -> list[float] | None:
    value = header.get(keyword)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != count or not all(
        isinstance(v, (int, float)) for v in value
    ):
        raise InstanceRefused(0xC000, f"{keyword} must be {count} numbers (got {value!r})")
    return [float(v) for v in value]


def _slice_position(header: dict[str, Any]) -> float | None:
    """Position along the slice normal (row x column direction), the order slices stack in."""
    position = _numbers(header, "ImagePositionPatient", 3)
    orientation = _numbers(header, "ImageOrientationPatient", 6)
    if position is None or orientation is None:
        return None
    r, c = orientation[:3], orientation[3:]
    normal = (r[1] * c[2] - r[2] * c[1], r[2] * c[0] - r[0] * c[2], r[0] * c[1] - r[1] * c[0])
    return sum(p * n for p, n in zip(position, normal))


def _uid(value: Any, name: str) -> str:
    text = str(value or "").strip().rstrip("\x00")
    if not text:
        raise InstanceRefused(0xA900, f"missing {name}")
    if len(text) > 64 or not _UID.match(text):
        raise InstanceRefused(0xA900, f"invalid {name} {text[:80]!r}")
    return text


def _check_complete(ds: Dataset) -> None:
    """pydicom quietly accepts a value shorter than its declared length: that is a truncated stream."""
    for tag in ds.keys():
        raw = ds.get_item(tag)
        if not isinstance(raw, RawDataElement) or not isinstance(raw.value, bytes):
            continue
        if raw.length != UNDEFINED_LENGTH and len(raw.value) < raw.length:
            raise InstanceRefused(
                0xC000,
                f"dataset truncated: element {tag} declares {raw.length} bytes, {len(raw.value)} present",
            )


def _check_pixel_length(ds: Dataset, transfer_syntax: str) -> None:
    """A native image whose pixel data is shorter than its header promises is truncated: refuse it now."""
    if transfer_syntax not in _NATIVE_SYNTAXES or "PixelData" not in ds:
        return
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        bits = int(ds.BitsAllocated)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        actual = len(ds.PixelData)
    except Exception as exc:
        raise InstanceRefused(0xC000, f"cannot read image pixel description: {exc}") from exc
    expected = (rows * columns * samples * frames * bits + 7) // 8
    if actual < expected:
        raise InstanceRefused(0xC000, f"pixel data truncated: {actual} bytes, header needs {expected}")


def parse_instance(data: bytes, sop_class_uid: str | None = None,
                   sop_instance_uid: str | None = None) -> ParsedInstance:
    """Read a DICOM file's header (pixel values are neither decoded nor converted).

    `sop_class_uid` / `sop_instance_uid` are what the sender's C-STORE request said; the dataset must agree
    with them where it states its own (some real files carry these only in the file meta).
    """
    try:
        ds = dcmread(BytesIO(data), force=False)
        _check_complete(ds)
        transfer_syntax = str(ds.file_meta.TransferSyntaxUID)
        header = {keyword: _element(ds, keyword) for keyword in HEADER_KEYWORDS}
        header.update(_radiopharmaceutical(ds))
        study_uid_raw = ds.get("StudyInstanceUID")
        series_uid_raw = ds.get("SeriesInstanceUID")
        own_class = str(ds.get("SOPClassUID") or "").strip()
        own_instance = str(ds.get("SOPInstanceUID") or "").strip()
        meta_class = str(ds.file_meta.get("MediaStorageSOPClassUID") or "").strip()
        meta_instance = str(ds.file_meta.get("MediaStorageSOPInstanceUID") or "").strip()
        patient_name = ds.get("PatientName")
        patient_id = ds.get("PatientID")
        study_date = ds.get("StudyDate")
        _check_pixel_length(ds, transfer_syntax)
    except InstanceRefused:
        raise
    except Exception as exc:  # corrupt input makes pydicom raise almost anything
        raise InstanceRefused(0xC000, f"unparseable dataset: {type(exc).__name__}: {exc}") from exc

    requested_class = (sop_class_uid or "").strip() or meta_class
    if own_class and requested_class and own_class != requested_class:
        raise InstanceRefused(
            0xA900, f"dataset SOP Class UID {own_class[:64]} disagrees with the request's {requested_class}"
        )
    requested_instance = (sop_instance_uid or "").strip() or meta_instance
    if own_instance and requested_instance and own_instance != requested_instance:
        raise InstanceRefused(
            0xA900,
            f"dataset SOP Instance UID {own_instance[:64]} disagrees with the request's {requested_instance}",
        )
    header = {key: value for key, value in header.items() if value is not None}
    sop_class = _uid(own_class or requested_class, "SOP Class UID")
    header["SOPClassUID"] = sop_class
    return ParsedInstance(
        study_uid=_uid(study_uid_raw, "Study Instance UID"),
        series_uid=_uid(series_uid_raw, "Series Instance UID"),
        sop_instance_uid=_uid(own_instance or requested_instance, "SOP Instance UID"),
        sop_class_uid=sop_class,
        transfer_syntax_uid=transfer_syntax,
        accession_number=_text(header.get("AccessionNumber"), 64),
        patient_id=_text(patient_id, 64),
        patient_name=_text(patient_name, 324),
        study_date=_text(study_date, 8),
        modality=_text(header.get("Modality"), 16),
        frame_of_reference_uid=_text(header.get("FrameOfReferenceUID"), 64),
        instance_number=_as_int(header, "InstanceNumber"),
        image_index=_as_int(header, "ImageIndex"),
        number_of_slices=_as_int(header, "NumberOfSlices"),
        number_of_time_slices=_as_int(header, "NumberOfTimeSlices"),
        slice_position=_slice_position(header),
        header=header,
    )


def _text(value: Any, length: int) -> str | None:
    if value is None:
        return None
    text = clean_text(str(value)).strip()
    return text[:length] or None


# ---------------------------------------------------------------------------------------------- files


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class StorageFolder:
    """The folder of received files: `<StudyUID>/<SeriesUID>/<SOPUID>.dcm`, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._known_dirs: set[Path] = set()
        self._lock = threading.Lock()

    def path_for(self, parsed: ParsedInstance, revision: int, sha256: str) -> Path:
        """Revision 1 is `<SOPUID>.dcm`; later ones carry their content hash, so none overwrites another."""
        name = parsed.sop_instance_uid + (".dcm" if revision == 1 else f".{sha256[:16]}.dcm")
        return self.root / parsed.study_uid / parsed.series_uid / name

    def _ensure_directory(self, directory: Path) -> None:
        """Create the series folder and make its entry in the parent durable (once per folder)."""
        if directory in self._known_dirs:
            return
        with self._lock:
            created: list[Path] = []
            current = directory
            while not current.exists() and current != self.root:
                created.append(current)
                current = current.parent
            directory.mkdir(parents=True, exist_ok=True)
            for folder in created:
                _fsync_directory(folder.parent)
            self._known_dirs.add(directory)

    def write_temporary(self, data: bytes) -> Path:
        """The bytes in a new temporary file under `.incoming/`, fsynced; renamed into place by `place`."""
        incoming = self.root / INCOMING
        for attempt in (1, 2):
            self._ensure_directory(incoming)
            temporary = incoming / f"{uuid.uuid4().hex}{TEMP_SUFFIX}"
            try:
                fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
                break
            except FileNotFoundError:
                # The folder was removed since it was created: make it again.
                self._known_dirs.discard(incoming)
                if attempt == 2:
                    raise
        try:
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return temporary

    def place(self, temporary: Path, path: Path) -> None:
        """Rename a flushed temporary file to its final name; durable once `sync_folder(path)` returns."""
        self._ensure_directory(path.parent)
        try:
            os.replace(temporary, path)
        except FileNotFoundError:
            self._known_dirs.discard(path.parent)  # series folder removed meanwhile (e.g. by retention)
            self._ensure_directory(path.parent)
            os.replace(temporary, path)

    @staticmethod
    def sync_folder(path: Path) -> None:
        """Make the rename of `path` durable."""
        _fsync_directory(path.parent)


# ---------------------------------------------------------------------------------------------- rows


@dataclass
class StoreOutcome:
    """What happened to one received instance."""

    kind: str  # "stored", "duplicate", "revised" or "restored"
    path: Path
    revision: int


class Staged:
    """A received instance being written to a temporary file (and hashed) in the background."""

    def __init__(self, future: Future[tuple[Path, str]]) -> None:
        self._future = future

    def result(self) -> tuple[Path, str]:
        """(flushed temporary file, sha256 of the bytes); raises what writing raised (e.g. disk full)."""
        return self._future.result()


def content_digest(data: bytes) -> str:
    """sha256 of the data set as sent, without the file meta the receiver adds (whose implementation
    UID and source AE title differ between senders of the same instance)."""
    view = memoryview(data)
    if data[128:132] == b"DICM" and data[132:136] == b"\x02\x00\x00\x00":  # (0002,0000) group length
        view = view[144 + int.from_bytes(data[140:144], "little"):]
    return hashlib.sha256(view).hexdigest()


def _write_and_hash(folder: StorageFolder, data: bytes) -> tuple[Path, str]:
    # hashlib releases the GIL on large buffers, so hashing too overlaps the parsing thread.
    return folder.write_temporary(data), content_digest(data)


@dataclass
class Caller:
    """Who sent the instance, for the study row and the audit trail."""

    ae_title: str
    host: str


class InstanceStore:
    """Stores instances durably and records them; one per receiving process, shared by associations."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.folder = StorageFolder(settings.storage.directory)
        self.engine = sessions.kw["bind"]
        self._syncer = ThreadPoolExecutor(max_workers=16, thread_name_prefix="storage-flush")
        # Striped locks: one SOP Instance UID is never handled by two associations at once.
        self._sop_locks = [threading.Lock() for _ in range(64)]

    def close(self) -> None:
        """Wait for folder flushes still running (only during shutdown)."""
        self._syncer.shutdown(wait=True)

    def _sop_lock(self, sop_instance_uid: str) -> threading.Lock:
        return self._sop_locks[hash(sop_instance_uid) % len(self._sop_locks)]

    @contextmanager
    def staging(self, data: bytes) -> Iterator[Staged]:
        """Start writing, flushing and hashing the received bytes in the background right away, so that the
        disk flush overlaps header parsing; the temporary file is removed on exit unless it was placed."""
        staged = Staged(self._syncer.submit(_write_and_hash, self.folder, data))
        try:
            yield staged
        finally:
            try:
                temporary, _ = staged.result()
            except Exception:
                pass  # the failure was reported to whoever used the result; nothing was left behind
            else:
                temporary.unlink(missing_ok=True)

    def store(self, parsed: ParsedInstance, data: bytes, caller: Caller, study_ids: dict[str, int],
              staged: Staged) -> StoreOutcome:
        """Place the staged file and commit its row; returns only when both are durable.

        `study_ids` caches study_uid -> row id for the calling association, sparing a lookup per instance.
        """
        with self._sop_lock(parsed.sop_instance_uid):
            with self.engine.connect() as connection:
                current = connection.execute(_CURRENT_REVISION, {"sop": parsed.sop_instance_uid}).first()
            temporary, sha256 = staged.result()
            if current is not None and current.sha256 == sha256:
                if not current.missing_file and Path(current.path).exists():
                    return StoreOutcome("duplicate", Path(current.path), current.revision)
                return self._restore(parsed, temporary, caller, current.id, Path(current.path),
                                     current.revision)
            revision = 1 if current is None else current.revision + 1
            path = self.folder.path_for(parsed, revision, sha256)
            self.folder.place(temporary, path)
            # The file's bytes are durable; the folder fsync making its rename durable runs while the row
            # is committed (two disk flushes at once instead of one after the other). Success is answered
            # only after both. A crash between them leaves a row without a file, never an answered one:
            # reconcile_storage flags it and the sender, never answered, sends the instance again.
            folder_synced = self._syncer.submit(self.folder.sync_folder, path)
            try:
                self._record(parsed, caller, study_ids, path, len(data), sha256, revision,
                             None if current is None else current.id)
            except BaseException:
                folder_synced.exception()
                path.unlink(missing_ok=True)
                raise
            folder_synced.result()
        return StoreOutcome("stored" if revision == 1 else "revised", path, revision)

    def _restore(self, parsed: ParsedInstance, temporary: Path, caller: Caller, instance_id: int,
                 path: Path, revision: int) -> StoreOutcome:
        """The same content again for a row whose file went missing: put the file back."""
        self.folder.place(temporary, path)
        self.folder.sync_folder(path)
        with self.sessions.begin() as session:
            session.execute(update(Instance).where(Instance.id == instance_id).values(missing_file=False))
            audit.record(session, "instance", "restored", reason="file was missing; same content re-sent",
                         study_uid=parsed.study_uid, series_uid=parsed.series_uid,
                         sop_instance_uid=parsed.sop_instance_uid, actor=caller.ae_title, peer=caller.host)
        return StoreOutcome("restored", path, revision)

    def study_id(self, parsed: ParsedInstance, caller: Caller, study_ids: dict[str, int]) -> int:
        """The study's row id, creating the row (own short transaction) on its first instance."""
        cached = study_ids.get(parsed.study_uid)
        if cached is None:
            cached = study_ids[parsed.study_uid] = ensure_study(self.sessions, parsed, caller)
        return cached

    def _record(self, parsed: ParsedInstance, caller: Caller, study_ids: dict[str, int], path: Path,
                size: int, sha256: str, revision: int, previous_id: int | None) -> None:
        """One short transaction: the study update comes first so SQLite takes its write lock at once.

        A plain connection (no ORM session) keeps the per-instance overhead down; the audit row of a
        revision goes through a session bound to the same connection and transaction.
        """
        for attempt in (1, 2):
            study_id = self.study_id(parsed, caller, study_ids)
            now = utcnow()
            with self.engine.begin() as connection:
                touched = connection.execute(_TOUCH_STUDY, {
                    "study_id": study_id, "accession_number": parsed.accession_number,
                    "patient_id": parsed.patient_id, "patient_name": parsed.patient_name,
                    "study_date": parsed.study_date, "calling_ae": caller.ae_title[:16],
                    "calling_host": caller.host[:64], "now": now, "added": 1 if previous_id is None else 0,
                }).rowcount
                if touched == 0:
                    study_ids.pop(parsed.study_uid, None)
                    if attempt == 1:
                        continue
                    raise RuntimeError(f"study row for {parsed.study_uid} vanished while storing")
                if previous_id is not None:
                    connection.execute(
                        update(Instance).where(Instance.id == previous_id).values(current=False))
                    with Session(bind=connection) as session:  # joins the connection's transaction
                        audit.record(session, "instance", "revised", reason="re-sent with different content",
                                     study_uid=parsed.study_uid, series_uid=parsed.series_uid,
                                     sop_instance_uid=parsed.sop_instance_uid, actor=caller.ae_title,
                                     peer=caller.host, revision=revision, sha256=sha256)
                        session.flush()
                connection.execute(_INSERT_INSTANCE, _instance_values(
                    parsed, study_id, path, size, sha256, revision, caller.ae_title, now))
                return


# Statements built once (SQLAlchemy caches their compiled form): they run for every received instance.
_CURRENT_REVISION = (
    select(Instance.id, Instance.sha256, Instance.revision, Instance.path, Instance.missing_file)
    .where(Instance.sop_instance_uid == bindparam("sop"), Instance.current.is_(True))
)
_TOUCH_STUDY = update(Study).where(Study.id == bindparam("study_id")).values(
    accession_number=bindparam("accession_number"), patient_id=bindparam("patient_id"),
    patient_name=bindparam("patient_name"), study_date=bindparam("study_date"),
    calling_ae=bindparam("calling_ae"), calling_host=bindparam("calling_host"),
    last_received_at=bindparam("now"), instance_count=Study.instance_count + bindparam("added"),
)
_INSERT_INSTANCE = insert(Instance)


def _instance_values(parsed: ParsedInstance, study_id: int, path: Path, size: int, sha256: str,
                     revision: int, calling_ae: str | None, now: dt.datetime) -> dict[str, Any]:
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


# ---------------------------------------------------------------------------------------------- start-up


def _walk_storage(root: Path) -> Iterator[Path]:
    for directory, _subdirs, files in os.walk(root):
        for name in files:
            yield Path(directory) / name


def reconcile_storage(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """At start-up: adopt stored files without rows, flag rows without files, remove temporary files.

    After a crash the folder and the database can disagree only in these ways, because a file is renamed
    into place before its row is committed and the sender is answered only after both.
    """
    root = settings.storage.directory
    root.mkdir(parents=True, exist_ok=True)
    with sessions() as session:
        rows = session.execute(select(Instance.id, Instance.path, Instance.missing_file)).all()
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
        exists = os.path.exists(row.path)
        if exists == (not row.missing_file):
            continue
        with sessions.begin() as session:
            session.execute(update(Instance).where(Instance.id == row.id).values(missing_file=not exists))
            audit.record(session, "instance", "file-missing" if not exists else "file-restored",
                         outcome="error" if not exists else "ok",
                         reason="stored file not found at start-up" if not exists else None,
                         path=row.path, instance_id=row.id)
        flagged += 1 if not exists else 0
    log.info("storage reconciled", extra={"adopted": adopted, "temporary_removed": removed,
                                          "missing_files": flagged, "rows": len(rows)})


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
        session.execute(update(Study).where(Study.id == study_id).values(
            last_received_at=now, instance_count=Study.instance_count + (1 if latest is None else 0)))
        session.execute(update(Instance).where(Instance.sop_instance_uid == parsed.sop_instance_uid)
                        .values(current=False))
        session.execute(insert(Instance).values(**_instance_values(
            parsed, study_id, path, len(data), sha256, revision, None, now)))
        audit.record(session, "instance", "adopted", reason="file stored without a row (interrupted receive)",
                     study_uid=parsed.study_uid, series_uid=parsed.series_uid,
                     sop_instance_uid=parsed.sop_instance_uid, path=str(path), revision=revision)
    return 1
