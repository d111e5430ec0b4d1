"""Fixtures shared by every test: databases (SQLite and a real PostgreSQL), configs and running nodes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
