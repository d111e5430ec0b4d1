"""The node's one clock: every timestamp it makes is an aware datetime in UTC."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, in UTC, timezone-aware, so it compares and subtracts safely with what the database returns."""
    return dt.datetime.now(dt.timezone.utc)
