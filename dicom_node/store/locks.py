"""Locks that hold across the receiving processes, not only across the threads of one.

With associations in several processes, two of them can carry the same SOP Instance UID at once (a sender
retrying on a second association), and the store's "revision 1 is new" fast path must still see one at a
time; and on SQLite, the store's group commits from several processes must queue rather than meet SQLite's
busy handler, which sleeps for milliseconds. Each lock is a `threading.Lock` (flock does not exclude
threads sharing an open file) followed by `fcntl.flock` on a small file under the storage folder, which
the kernel hands to the next waiter the moment it is released, and releases if its holder dies.
"""

from __future__ import annotations

import fcntl
import os
import threading
import zlib
from pathlib import Path
from types import TracebackType

LOCK_FOLDER = ".locks"
_SOP_STRIPES = 64


class ProcessSharedLock:
    """Exclusive across threads and processes; the lock file is opened on first use and kept open."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._thread_lock = threading.Lock()
        self._fd: int | None = None

    def __enter__(self) -> None:
        self._thread_lock.acquire()
        try:
            if self._fd is None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            assert self._fd is not None
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._thread_lock.release()


class SopInstanceLocks:
    """One lock per stripe of SOP Instance UIDs, striped by a hash that is the same in every process
    (Python's own `hash` of a string differs between interpreters)."""

    def __init__(self, storage_root: Path) -> None:
        folder = storage_root / LOCK_FOLDER
        self._stripes = [ProcessSharedLock(folder / f"sop-{index:02d}.lock") for index in range(_SOP_STRIPES)]

    def __call__(self, sop_instance_uid: str) -> ProcessSharedLock:
        return self._stripes[zlib.crc32(sop_instance_uid.encode()) % _SOP_STRIPES]


def sqlite_commit_lock(database: Path) -> ProcessSharedLock:
    """The lock the store's group commits take on an SQLite database: a file next to it."""
    return ProcessSharedLock(database.with_name(database.name + ".commit-lock"))
