"""Dashboard server (placeholder until the admin issue lands)."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.config import Settings


class DashboardServer:
    def stop(self) -> None:
        """Stop serving."""


def start_dashboard(settings: Settings, sessions: sessionmaker[Session]) -> DashboardServer:
    return DashboardServer()
