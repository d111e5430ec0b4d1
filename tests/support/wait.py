"""The one way tests wait for something to happen: poll until truthy, or fail saying what and why."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], *, timeout: float, what: str,
             log: Callable[[], str] | None = None, interval: float = 0.1) -> T:
    """Poll `check` until it returns something truthy and return it; on timeout fail with `what` and the log.

    Never returns a falsy value, so neither `assert wait_for(...)` nor `value = wait_for(...)` passes by luck.
    `log` is called only on failure (e.g. `node.log_text`), so the failure shows what the node was doing.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    detail = f"\n--- log (last 4000 characters) ---\n{log()[-4000:]}" if log is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{detail}")
