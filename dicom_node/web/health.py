"""Liveness checks for orchestration (/healthz) and the health page: database answers, storage writable."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings


@dataclass
class DiskUsage:
    path: str
    free_bytes: int
    total_bytes: int

    @property
    def free_fraction(self) -> float:
        return self.free_bytes / self.total_bytes if self.total_bytes else 0.0


def disk_usage(path: Path) -> DiskUsage | None:
    """Free space on the file system holding `path` (None if it does not exist)."""
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return None
    return DiskUsage(str(path), usage.free, usage.total)


def _writable(directory: Path) -> str | None:
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".healthz-") as handle:
            handle.write(b"ok")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        return f"{directory} is not writable: {exc.strerror or exc}"
    return None


def problems(settings: Settings, sessions: sessionmaker[Session]) -> list[str]:
    """Reasons the node cannot do its job right now; empty when healthy."""
    found: list[str] = []
    try:
        with sessions() as session:
            session.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        found.append(f"database does not answer: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    for directory in (settings.storage.directory, settings.storage.results_directory):
        problem = _writable(Path(directory))
        if problem:
            found.append(problem)
    usage = disk_usage(Path(settings.storage.directory))
    floor = settings.node.min_free_disk_mb * 1024 * 1024
    if usage is not None and usage.free_bytes < floor:
        found.append(
            f"free disk {usage.free_bytes // 2**20} MB below "
            f"node.min_free_disk_mb {settings.node.min_free_disk_mb}"
        )
    return found
