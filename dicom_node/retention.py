"""Retention of stored images (placeholder until the admin issue lands)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings


def retention_tick(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """Purge images of delivered studies older than the retention period."""
