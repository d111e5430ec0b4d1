"""Fixtures for the receiving tests: a node with no analysis workers, and its database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.support.tools import require_tool
from tests.dicom_node.receive.clients import NodeDatabase
from tests.support.node import NodeProcess, deep_merge


@pytest.fixture(autouse=True)
def _dcmtk() -> None:
    require_tool("storescu")
    require_tool("echoscu")


@pytest.fixture
def receiving_node(node_factory: Callable[..., NodeProcess]) -> Callable[..., NodeProcess]:
    """`receiving_node(overrides, db_url)`: a real `psma-node serve` that only receives (no workers)."""

    def start(overrides: dict[str, Any] | None = None, db_url: str | None = None,
              name: str = "node") -> NodeProcess:
        base = {"workers": {"count": 0}, "assembly": {"tick_seconds": 1.0}}
        return node_factory(deep_merge(base, overrides or {}), db_url=db_url, name=name)

    return start


@pytest.fixture
def node_db() -> Iterator[Callable[[NodeProcess], NodeDatabase]]:
    opened: list[NodeDatabase] = []

    def open_db(node: NodeProcess) -> NodeDatabase:
        database = NodeDatabase(node.config["database"]["url"])
        opened.append(database)
        return database

    yield open_db
    for database in opened:
        database.close()


@pytest.fixture(scope="module")
def db(node: NodeProcess) -> Iterator[NodeDatabase]:
    """The database of the module's shared `node` (modules that start one node for all their tests)."""
    database = NodeDatabase(node.config["database"]["url"])
    yield database
    database.close()
