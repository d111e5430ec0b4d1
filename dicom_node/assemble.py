"""Study assembly (placeholder until the assembly issue lands)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings


def assembly_tick(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """Judge completeness of receiving studies and queue jobs for ready ones."""
