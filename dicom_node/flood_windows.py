"""Repeated events per source, in time windows: the first of a window is reported in full at once, the
rest are only counted and reported as one summary when the window is over.

A peer that keeps failing (a flood of bad connections to the DICOM port, bad tokens or passwords at the
dashboard) must not grow the log and the audit table without bound, yet a single mistake must show at once.
The DICOM gate's `port_guard.ClosureReporter` and the dashboard's `web.refusals.RefusalLog` both keep their
windows here and only word their rows themselves.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

MAX_OPEN_WINDOWS = 10_000
"""Bound on open windows (one per source and kind of event); when reached, all are summarised early."""


@dataclass
class Window:
    """One key's window: the details of the event that opened it, and what came after it."""

    key: Hashable
    started: float
    first: dict[str, Any]
    latest: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # events after the first, by kind

    @property
    def suppressed(self) -> int:
        return sum(self.counts.values())

    def age(self) -> float:
        return time.monotonic() - self.started


class FloodWindows:
    """Open windows by key, thread-safe; callers report what `record` and `take_due` hand back."""

    def __init__(self, window_s: float, max_open: int = MAX_OPEN_WINDOWS) -> None:
        self.window_s = window_s
        self._max_open = max_open
        self._lock = threading.Lock()
        self._open: dict[Hashable, Window] = {}

    def record(self, key: Hashable, kind: str = "", **details: Any) -> tuple[bool, list[Window]]:
        """Count one event. Returns whether it opened a window (report it in full now), and the windows
        that are over (summarise those that counted anything)."""
        now = time.monotonic()
        with self._lock:
            ended = self._take(now, force=len(self._open) >= self._max_open)
            window = self._open.get(key)
            if window is None:
                self._open[key] = Window(key, now, details)
                return True, ended
            window.counts[kind] = window.counts.get(kind, 0) + 1
            window.latest = details
            return False, ended

    def take_due(self, everything: bool = False) -> list[Window]:
        """The windows that are over (every open one with `everything`, at shutdown), closed."""
        with self._lock:
            return self._take(time.monotonic(), force=everything)

    def _take(self, now: float, force: bool) -> list[Window]:
        ended = [window for window in self._open.values() if force or now - window.started >= self.window_s]
        for window in ended:
            del self._open[window.key]
        return ended
