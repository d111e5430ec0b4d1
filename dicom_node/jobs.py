"""The job queue in the database (placeholder until the assembly issue lands)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings


def requeue_expired_jobs(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """Put jobs whose worker's lease expired back in the queue."""
