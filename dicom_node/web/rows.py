"""ORM rows as JSON-ready data for the API, with every timestamp in UTC ISO format."""

from __future__ import annotations

import datetime as dt
from typing import Any


def row(obj: Any) -> dict[str, Any]:
    """All columns of one ORM row (timestamps come back aware UTC from the database)."""
    data = {}
    for column in obj.__table__.columns:
        value = getattr(obj, column.key)
        data[column.key] = value.isoformat() if isinstance(value, dt.datetime) else value
    return data
