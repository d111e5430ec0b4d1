"""Delivery of result objects (placeholder until the results issue lands)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings


def send_tick(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """Attempt due outbox items."""
