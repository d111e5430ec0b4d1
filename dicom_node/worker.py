"""Analysis worker processes (placeholder until the assembly issue lands)."""

from __future__ import annotations

from dicom_node.config import Settings


class WorkerPool:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def start(self) -> None:
        """Start settings.workers.count processes."""

    def supervise(self) -> None:
        """Restart dead workers."""

    def stop(self) -> None:
        """Stop workers, letting their leases expire or releasing their jobs."""
