"""When to restart a child process of `serve` that died: at once the first time, then backing off while it
keeps dying soon after each start, so a process that cannot start (a broken database URL, a missing
library) does not restart in a tight loop and flood the log. Worker and receiving processes share it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

RESTART_BACKOFF_S = (0.0, 1.0, 5.0, 30.0)
"""Delay before a restart, by how many times in a row the process died within `QUICK_DEATH_S` of starting."""
QUICK_DEATH_S = 60.0


@dataclass
class RestartSchedule:
    """One child process's restarts: when it started, how often in a row it died young, when it is due."""

    started: float = field(default_factory=time.monotonic)
    quick_deaths: int = 0
    restart_at: float = 0.0  # 0 while it runs (or its death is not noticed yet)

    def died(self, now: float) -> float | None:
        """Note the death the first time it is seen; the delay before the restart (None if already noted)."""
        if self.restart_at:
            return None
        self.quick_deaths = self.quick_deaths + 1 if now - self.started < QUICK_DEATH_S else 0
        delay = RESTART_BACKOFF_S[min(self.quick_deaths, len(RESTART_BACKOFF_S) - 1)]
        self.restart_at = now + delay
        return delay

    def due(self, now: float) -> bool:
        return bool(self.restart_at) and now >= self.restart_at

    def restarted(self, now: float) -> None:
        self.started, self.restart_at = now, 0.0
