"""Fixtures shared by every test: databases (SQLite and a real PostgreSQL), configs and running nodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.db import migrate
from tests.support.node import SHARED_DATA, NodeProcess, write_config

pytest_plugins = ["tests.support.db", "tests.support.dicom"]
"""The shared fixtures (databases, sessions, small studies) are registered once, here."""


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} absent")
    return SHARED_DATA


@pytest.fixture
def node_factory(tmp_path: Path) -> Iterator:
    """Start real nodes: `node_factory(overrides, db_url=None)`; every node is stopped at teardown.

    A node's own new SQLite database is copied from the migrated template before it starts, so each start
    skips running the migrations (migrating at start is tested in tests/db/test_schema_gate.py).
    """
    nodes: list[NodeProcess] = []

    def start(overrides: dict | None = None, db_url: str | None = None, name: str = "node",
              env: dict[str, str] | None = None) -> NodeProcess:
        config = write_config(tmp_path / name, overrides, db_url)
        node = NodeProcess(config, env)
        own_database = f"sqlite:///{tmp_path / name / 'node.db'}"
        if db_url is None and node.config["database"]["url"] == own_database \
                and not (tmp_path / name / "node.db").exists():
            migrate(own_database)
        nodes.append(node)
        return node.start()

    yield start
    for node in nodes:
        node.stop()
