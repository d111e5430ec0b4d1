"""Refused HTTP callers, recorded once per source and window instead of once per attempt.

Unauthenticated callers must not be able to grow the audit table and the log without bound: 300 invalid
bearer tokens used to make 300 audit rows and 300 WARNING lines. The first refusal of a kind from a source
in a window is recorded in full at once (so a single mistake is visible immediately); the rest of that
window only count, and one summary row and line with the count follows when the window is over (written
by the next refusal after it, by the dashboard's housekeeping, or at shutdown).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

WINDOW_S = 60.0
MAX_SOURCES = 10_000
"""Bound on open windows; beyond it the oldest are summarised early."""

Audit = Callable[..., None]


@dataclass
class _Window:
    started: float
    action: str
    reason: str
    suppressed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class RefusalLog:
    """Writes refusals through `audit(category, action, **fields)`, aggregated per (source, action)."""

    def __init__(self, audit: Audit, window_s: float = WINDOW_S) -> None:
        self._audit = audit
        self._window_s = window_s
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], _Window] = {}

    def refused(self, action: str, source: str | None, reason: str, **fields: Any) -> None:
        """One refused request: recorded now if it opens a window, else counted for the summary."""
        peer = source or "unknown"
        now = time.monotonic()
        due: list[tuple[tuple[str, str], _Window]] = []
        with self._lock:
            due = self._take_due(now, force=len(self._windows) >= MAX_SOURCES)
            window = self._windows.get((peer, action))
            if window is not None:
                window.suppressed += 1
                window.reason = reason
                window.extra = fields
                opened = False
            else:
                self._windows[(peer, action)] = _Window(now, action, reason)
                opened = True
        self._summarise(due)
        if opened:
            # The user name tried stays out of the log (audit only): people type passwords into it.
            shown = {k: v for k, v in fields.items() if k != "actor"}
            log.warning(f"refused {action}: {reason}", extra={"peer": peer, **shown})
            self._audit("admin", action, outcome="refused", reason=reason, peer=peer, **fields)

    def flush_due(self) -> None:
        """Summarise the windows that are over (housekeeping calls this every few seconds)."""
        with self._lock:
            due = self._take_due(time.monotonic())
        self._summarise(due)

    def close(self) -> None:
        """Summarise every open window (at shutdown)."""
        with self._lock:
            due = self._take_due(time.monotonic(), force=True)
        self._summarise(due)

    def _take_due(self, now: float, force: bool = False) -> list[tuple[tuple[str, str], _Window]]:
        due = [(k, w) for k, w in self._windows.items() if force or now - w.started >= self._window_s]
        for key, _window in due:
            del self._windows[key]
        return due

    def _summarise(self, due: list[tuple[tuple[str, str], _Window]]) -> None:
        for (peer, action), window in due:
            if window.suppressed == 0:
                continue
            seconds = round(time.monotonic() - window.started)
            reason = f"{window.suppressed} more refused within {seconds} s (last: {window.reason})"
            log.warning(f"refused {action}: {reason}", extra={"peer": peer, "count": window.suppressed})
            self._audit(
                "admin", action, outcome="refused", reason=reason, peer=peer, count=window.suppressed,
                **window.extra,
            )
