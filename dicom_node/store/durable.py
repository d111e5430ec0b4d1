"""Files that survive a power cut: written to a temporary file, flushed, renamed into place, folder flushed.

A reader (or a restart) never sees a half-written file under its final name, and once the folder entry is
flushed the file is there after a crash. Two forms share these steps:

- `write_durably`: one call that waits for each flush in turn; for writers that can afford to (the report
  stage writes a few objects per study).
- `StorageFolder` + `Staged`: the same steps split apart for the receiver, which must start writing before
  it knows the file's name (that needs the parsed header and the database's revision) and answers a
  sender only after the data flush, the folder flush and its database commit, which it runs at the same
  time; waiting for them in turn would dominate the time per instance.
"""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path
from typing import Any

from dicom_node.store.file_meta import content_digest
from dicom_node.store.headers import ParsedInstance

TEMP_SUFFIX = ".tmp"
INCOMING = ".incoming"  # the receiver's temporary files, on the same filesystem as their final place


def fsync_directory(directory: Path) -> None:
    """Flush a folder's entries: a rename into it (or a new subfolder) is durable only after this."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _create(path: Path, data: bytes | memoryview, flags: int, mode: int) -> int:
    """A new file holding `data` (not yet flushed); returns its open descriptor, removes it on failure."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return fd


def write_durably(path: Path, data: bytes | memoryview) -> None:
    """`data` as the file `path`, durable on return: a temporary file beside it, fsync, rename, folder fsync.

    A temporary file left by a crash is overwritten by the next attempt (and removed at start-up when it
    lies in the storage folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}{TEMP_SUFFIX}")
    fd = _create(temporary, data, os.O_TRUNC, 0o666)
    try:
        os.fsync(fd)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_directory(path.parent)


def intact(path: Path, size: int) -> bool:
    """The stored file is there with its recorded length (a flush cut short by power loss shortens it)."""
    try:
        return os.stat(path).st_size == size
    except OSError:
        return False


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
                fsync_directory(folder.parent)
            self._known_dirs.add(directory)

    def write_temporary(self, data: bytes) -> tuple[Path, int]:
        """The bytes in a new temporary file under `.incoming/` (not yet flushed) and its open descriptor;
        renamed into place by `place`, flushed through the descriptor."""
        incoming = self.root / INCOMING
        for attempt in (1, 2):
            self._ensure_directory(incoming)
            temporary = incoming / f"{uuid.uuid4().hex}{TEMP_SUFFIX}"
            try:
                fd = _create(temporary, data, os.O_EXCL, 0o640)
                break
            except FileNotFoundError:
                # The folder was removed since it was created: make it again.
                self._known_dirs.discard(incoming)
                if attempt == 2:
                    raise
        return temporary, fd

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
        fsync_directory(path.parent)


class Staged:
    """A received instance being written to a temporary file, flushed and hashed in the background.

    Three stages, each waited for only where it is needed: `written()` once the bytes are in the file
    (enough to rename it into place), `digest()` once hashed, `flushed()` once the file's data is on disk.
    """

    def __init__(self, folder: StorageFolder, data: bytes, executor: ThreadPoolExecutor) -> None:
        self._written: Future[Path] = Future()
        self.placed = False  # renamed into place: nothing to clean up
        self._flushed = executor.submit(self._write_and_flush, folder, data)
        self._digest = executor.submit(content_digest, data)

    def _write_and_flush(self, folder: StorageFolder, data: bytes) -> None:
        try:
            temporary, fd = folder.write_temporary(data)
        except BaseException as exc:
            self._written.set_exception(exc)
            raise
        self._written.set_result(temporary)
        try:
            os.fsync(fd)  # also valid after the file was renamed: the descriptor follows the file
        finally:
            os.close(fd)

    def written(self) -> Path:
        """The temporary file holding all the bytes (maybe not yet on disk); raises what writing raised."""
        return self._written.result()

    def digest(self) -> str:
        return self._digest.result()

    def flushed(self) -> None:
        """Returns once the file's bytes are on disk; raises what writing or flushing raised."""
        self._flushed.result()

    def settle(self) -> Path | None:
        """Wait for the background work, whatever its outcome; the temporary file's path if it was made."""
        background: list[Future[Any]] = [self._flushed, self._digest]
        futures_wait(background)
        return None if self._written.exception() is not None else self._written.result()

