"""Durable storage of received instances (placeholder until the receiving issue lands)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings


def reconcile_storage(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """At start-up: adopt stored files without rows, flag rows without files, remove temporary files."""
