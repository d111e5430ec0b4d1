"""Database URLs as admins write them, made to name the driver installed here (no SQLAlchemy import, so the
configuration can use it while it validates)."""

from __future__ import annotations

from importlib.util import find_spec


def with_installed_driver(url: str) -> str:
    """`postgresql://` and `postgres://` (what most admins write) with the PostgreSQL driver installed here.

    SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3 and does not know `postgres://` at all; this
    node ships psycopg2, so both mean `postgresql+psycopg2://` unless psycopg 3 is installed too.
    """
    for plain in ("postgresql://", "postgres://"):
        if url.startswith(plain):
            driver = "postgresql+psycopg://" if find_spec("psycopg") else "postgresql+psycopg2://"
            return driver + url[len(plain):]
    return url
