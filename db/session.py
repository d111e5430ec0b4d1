"""Engines and sessions for SQLite (embedded default) and PostgreSQL, and the schema-version gate."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect, text

from db.urls import with_installed_driver

if TYPE_CHECKING:
    # alembic (and mako, pygments) is imported only to migrate: ~0.3 s off every CLI command; the ORM only
    # where sessions are made: `studies list`, `outbox list` and `config check` stay on SQLAlchemy Core
    from alembic.config import Config as AlembicConfig
    from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class SchemaOutOfDate(Exception):
    """The database is older than this software; the message says which command upgrades it."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the receiver and the workers read and write at once; synchronous=FULL makes a commit
    # durable before the receiver acknowledges an instance; busy_timeout rides over short write locks.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    """An engine configured for concurrent use by several processes."""
    url = with_installed_driver(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN; issue BEGIN IMMEDIATE ourselves for writes
        # is not needed: short transactions plus busy_timeout suffice for this node's write rate.
        return engine
    # A PostgreSQL host that drops packets must not hang start-up (or a page) for minutes.
    connect_args = {"connect_timeout": 10} if url.startswith("postgresql") else {}
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20, connect_args=connect_args)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    from sqlalchemy.orm import sessionmaker

    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> AlembicConfig:
    from alembic.config import Config as AlembicConfig

    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", with_installed_driver(url).replace("%", "%%"))
    return config


_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*(?::[^=]*)?=\s*['\"]?([\w.-]*)", re.MULTILINE)


def head_revision() -> str:
    """The newest migration: the revision no other version file names as its down_revision.

    Read from the version files' own assignments rather than through alembic's script loader, which
    imports alembic and every migration (tests/db/test_migrations.py: equal to what alembic's
    upgrade records).
    """
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS_DIR / "versions").glob("*.py"):
        for name, value in _REVISION_LINE.findall(path.read_text(encoding="utf-8")):
            if value and value != "None":
                (revisions if name == "revision" else parents).add(value)
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"migrations must have exactly one head, found {sorted(heads)}")
    return heads.pop()


def current_revision(engine: Engine) -> str | None:
    """The revision alembic recorded in the database (None before the first migration)."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        versions = list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
    if len(versions) > 1:
        raise RuntimeError(f"the database records several schema heads: {versions}")
    return versions[0] if versions else None


def upgrade(url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision` (what `psma-node db upgrade` runs)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def ensure_schema(engine: Engine, url: str, auto_upgrade: bool) -> None:
    """Refuse to run on an older schema unless configured to upgrade it."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if auto_upgrade:
        upgrade(url)
        return
    raise SchemaOutOfDate(
        f"database schema is at {current or 'empty'}, this software needs {head}: "
        "run `psma-node db upgrade` (or set database.auto_upgrade: true)"
    )
