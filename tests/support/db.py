"""Database fixtures for every test: a fresh SQLite and a fresh real PostgreSQL database, migrated to head."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from db.session import make_engine, make_session_factory, upgrade

POSTGRES_URL = os.environ.get("PSMA_TEST_POSTGRES_URL", "")


@functools.cache
def _sqlite_template() -> Path:
    """One SQLite file migrated to head per test run, removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="psma-schema-"))
    atexit.register(shutil.rmtree, folder, True)
    upgrade(f"sqlite:///{folder / 'template.db'}")
    return folder / "template.db"


def migrate(url: str) -> None:
    """Bring a fresh database to head; SQLite files are copied from one migrated template (much faster)."""
    if not url.startswith("sqlite:///"):
        upgrade(url)
        return
    target = Path(url[len("sqlite:///") :])
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_sqlite_template(), target)


def postgres_database() -> Iterator[str]:
    """Create a throw-away PostgreSQL database, yield its URL, drop it afterwards (skips without a server)."""
    if not POSTGRES_URL:
        pytest.skip("PSMA_TEST_POSTGRES_URL not set (the README test command sets it)")
    name = f"psma_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f"CREATE DATABASE {name}"))
    url = POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database URL: SQLite in a temporary folder, and a real PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
    else:
        yield from postgres_database()


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """A session factory on `db_url` migrated to head; its engine is disposed at teardown."""
    yield from _migrated_sessions(db_url)


@pytest.fixture
def sqlite_sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    """Like `sessions`, but SQLite only: for behaviour that does not depend on the database engine."""
    yield from _migrated_sessions(f"sqlite:///{tmp_path / 'sqlite.db'}")


def _migrated_sessions(url: str) -> Iterator[sessionmaker[Session]]:
    migrate(url)
    engine = make_engine(url)
    try:
        yield make_session_factory(engine)
    finally:
        engine.dispose()
