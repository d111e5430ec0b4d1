"""Times given on the command line (`--since`, `--until`): an ISO date/time or an age such as 12h.

Its own module, free of the database, so that `studies list --since` does not load what `audit export` needs.
"""

from __future__ import annotations

import datetime as dt
import re

import click

from db.clock import utcnow

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([mhdw])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(value: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """ISO date or date-time (UTC unless it says otherwise), or an age such as 30m, 12h, 7d, 2w."""
    now = now or utcnow()
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        return now - dt.timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise click.BadParameter(
            f"{value!r} is neither an ISO date/time (2024-05-01, 2024-05-01T08:00) "
            "nor an age (30m, 12h, 7d, 2w)"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)
