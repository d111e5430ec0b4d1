"""Fixtures shared by every test: databases (SQLite and a real PostgreSQL), configs and running nodes."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.support.node import SHARED_DATA, NodeProcess, write_config

POSTGRES_URL = os.environ.get("PSMA_TEST_POSTGRES_URL", "")


def require_tool(name: str) -> str:
    """The path of a Debian tool the tests use; its absence fails loudly (`make test` installs it)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found: run the README's test command (`make test`), which installs it")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} absent")
    return SHARED_DATA


def _postgres_database() -> Iterator[str]:
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
        yield from _postgres_database()


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator:
    """Start real nodes: `node_factory(overrides, db_url=None)`; every node is stopped at teardown."""
    nodes: list[NodeProcess] = []

    def start(overrides: dict | None = None, db_url: str | None = None, name: str = "node",
              env: dict[str, str] | None = None) -> NodeProcess:
        config = write_config(tmp_path / name, overrides, db_url)
        node = NodeProcess(config, env)
        nodes.append(node)
        return node.start()

    yield start
    for node in nodes:
        node.stop()
