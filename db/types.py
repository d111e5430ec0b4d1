"""Column types shared by every table.

SQLite keeps no time zone and hands back naive datetimes, PostgreSQL hands back aware ones in the session's
zone. `UTCDateTime` makes both behave the same: it stores UTC and always returns aware UTC datetimes, so no
caller ever has to patch a timestamp it read.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator[dt.datetime]):
    """`DateTime(timezone=True)` in the schema; aware UTC datetimes in Python on every database."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """Refuse naive values (their zone is a guess); convert aware ones to UTC before storing."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} for a UTC column; use db.clock.utcnow()")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        """SQLite's naive values were written as UTC; PostgreSQL's aware ones are converted to UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)
