"""C-STORE / C-ECHO service class provider (placeholder until the receiving issue lands)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings


class Receiver:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.port = settings.node.port

    def start(self) -> None:
        """Start listening (non-blocking)."""

    def stop(self) -> None:
        """Stop listening and close associations."""
