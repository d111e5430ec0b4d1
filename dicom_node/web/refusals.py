"""Refused HTTP callers, recorded once per source and window instead of once per attempt.

Unauthenticated callers must not be able to grow the audit table and the log without bound: 300 invalid
bearer tokens used to make 300 audit rows and 300 WARNING lines. The first refusal of a kind from a source
in a window is recorded in full at once (so a single mistake is visible immediately); the rest of that
window only count, and one summary row and line with the count follows when the window is over (written
by the next refusal after it, by the dashboard's housekeeping, or at shutdown).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, cast

from dicom_node.flood_windows import FloodWindows, Window

log = logging.getLogger(__name__)

WINDOW_S = 60.0

Audit = Callable[..., None]


class RefusalLog:
    """Writes refusals through `audit(category, action, **fields)`, aggregated per (source, action)."""

    def __init__(self, audit: Audit, window_s: float = WINDOW_S) -> None:
        self._audit = audit
        self._windows = FloodWindows(window_s)

    def refused(self, action: str, source: str | None, reason: str, **fields: Any) -> None:
        """One refused request: recorded now if it opens a window, else counted for the summary."""
        peer = source or "unknown"
        opened, ended = self._windows.record((peer, action), reason=reason, fields=fields)
        self._summarise(ended)
        if opened:
            # The user name tried stays out of the log (audit only): people type passwords into it.
            shown = {k: v for k, v in fields.items() if k != "actor"}
            log.warning(f"refused {action}: {reason}", extra={"peer": peer, **shown})
            self._audit("admin", action, outcome="refused", reason=reason, peer=peer, **fields)

    def flush_due(self) -> None:
        """Summarise the windows that are over (housekeeping calls this every few seconds)."""
        self._summarise(self._windows.take_due())

    def close(self) -> None:
        """Summarise every open window (at shutdown)."""
        self._summarise(self._windows.take_due(everything=True))

    def _summarise(self, windows: list[Window]) -> None:
        for window in windows:
            if not window.suppressed:
                continue
            peer, action = cast(tuple[str, str], window.key)
            reason = (f"{window.suppressed} more refused within {round(window.age())} s "
                      f"(last: {window.latest['reason']})")
            log.warning(f"refused {action}: {reason}", extra={"peer": peer, "count": window.suppressed})
            self._audit("admin", action, outcome="refused", reason=reason, peer=peer, count=window.suppressed,
                        **window.latest["fields"])
