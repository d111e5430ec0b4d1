"""Login throttling: an exponential delay after failed log-ins, per (user, source) and per source.

Keyed by the pair, an attacker guessing the admin's password from one address slows down only that
address's attempts at that name: the admin, from their own address, logs in at once. Keyed by source alone
(with a larger allowance), one address spraying many user names slows down too. Delays are capped, and an
attempt refused during a delay is not checked and does not lengthen it, so nobody is locked out for longer
than the cap after the last checked attempt. A throttled attempt costs no password hash, which also keeps
a login flood cheap. State is in memory: it resets when the dashboard restarts.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

PAIR_FREE_ATTEMPTS = 3
"""Failed attempts at one user name from one address before delays start."""
SOURCE_FREE_ATTEMPTS = 10
"""Failed attempts from one address (any user names) before delays start."""
BASE_DELAY_S = 1.0
MAX_DELAY_S = 60.0
FORGET_AFTER_S = 900.0
"""A key quiet this long starts from zero again."""
MAX_KEYS = 10_000
"""Bound on remembered keys, so a scan from many addresses cannot grow memory without limit."""


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    blocked_until: float = 0.0


def delay_after(failures: int, free: int) -> float:
    """Seconds to wait after `failures` failed attempts: 0 within the allowance, then 1, 2, 4 … to the cap."""
    if failures < free:
        return 0.0
    return min(MAX_DELAY_S, BASE_DELAY_S * 2 ** (failures - free))


class LoginThrottle:
    """Thread-safe record of log-in attempts per (user, source) and per source."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: dict[tuple[str, ...], _Failures] = {}

    def _entries(self, user: str, source: str) -> list[tuple[tuple[str, ...], int]]:
        return [(("pair", user, source), PAIR_FREE_ATTEMPTS), (("source", source), SOURCE_FREE_ATTEMPTS)]

    def admit(self, user: str, source: str) -> float:
        """Seconds `user` must still wait at `source` (nothing recorded), or 0 to check the password now.

        An admitted attempt counts as failed in advance, in the same locked step as the check, so that
        many concurrent attempts cannot all pass before the first one's (slow) hash has failed."""
        now = time.monotonic()
        with self._lock:
            entries = [(key, free, self._keys.get(key)) for key, free in self._entries(user, source)]
            wait = max([0.0, *(entry.blocked_until - now for _k, _f, entry in entries if entry is not None)])
            if wait > 0:
                return wait
            self._forget_stale(now)
            for key, free, _entry in entries:
                entry = self._keys.setdefault(key, _Failures())
                if now - entry.last > FORGET_AFTER_S:
                    entry.count = 0
                entry.count += 1
                entry.last = now
                entry.blocked_until = now + delay_after(entry.count, free)
        return 0.0

    def succeeded(self, user: str, source: str) -> None:
        """The password was right: forget that user's record at that address and take back the count
        the attempt added to the address's own record."""
        with self._lock:
            self._keys.pop(("pair", user, source), None)
            entry = self._keys.get(("source", source))
            if entry is not None and entry.count > 0:
                entry.count -= 1
                entry.blocked_until = entry.last + delay_after(entry.count, SOURCE_FREE_ATTEMPTS)

    def _forget_stale(self, now: float) -> None:
        if len(self._keys) < MAX_KEYS:
            return
        for key in [k for k, e in self._keys.items() if now - e.last > FORGET_AFTER_S]:
            del self._keys[key]
        while len(self._keys) >= MAX_KEYS:  # all recent: drop the oldest
            del self._keys[min(self._keys, key=lambda k: self._keys[k].last)]
