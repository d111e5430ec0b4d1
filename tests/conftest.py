"""Fixtures shared by every test: databases (SQLite and a real PostgreSQL), configs and running nodes."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.db import migrate
from tests.support.node import SHARED_DATA, NodeProcess, write_config

pytest_plugins = ["tests.support.db", "tests.support.dicom"]
"""The shared fixtures (databases, sessions, small studies) are registered once, here."""


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`make test` runs the suite on two pytest-xdist workers. Each module's tests stay on one worker, so a
    module's fixtures (the OHIF viewer, a shared node) start once, and the container tests all share one
    worker: one Docker engine, one image build, the compose stack's fixed ports."""
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "tests/deploy" if module.startswith("tests/deploy/") else module

    return ByModule(config, log)


# Modules of a minute or more. Under xdist they are handed out first, so both workers finish together
# instead of one running a long module alone at the end.
LONG_MODULES = ("tests/deploy/", "tests/test_readme.py",
                "tests/dicom_node/assemble/test_node_assembly.py",
                "tests/dicom_node/report/test_vignettes.py",
                "tests/dicom_node/evaluation/test_whole_loop.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if hasattr(config, "workerinput"):  # an xdist worker: its collection order is the schedule's
        items.sort(key=lambda item: not item.nodeid.startswith(LONG_MODULES))


def _processes_naming(text: str) -> dict[int, str]:
    """Processes (other than this one) whose command line contains `text`, with that command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found[int(entry.name)] = command.strip()
    return found


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_tests(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every process a test starts is stopped by it: servers the tests start (nodes, Orthanc, storescp) name
    a file under this session's temporary folder on their command line, so one still running at the end
    leaked. It is killed, and the session fails, naming it."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    deadline = time.monotonic() + 10.0  # a server a last fixture stopped may still be exiting
    while (leaked := _processes_naming(base)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in leaked:
        with contextlib.suppress(ProcessLookupError):
            group = os.getpgid(pid)  # a node's workers share its group; ours must survive
            if group != os.getpgrp():
                os.killpg(group, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
    assert not leaked, "processes started by tests outlived them:\n" + "\n".join(leaked.values())


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
        database = tmp_path / name / "node.db"
        own_database = f"sqlite:///{database}"
        if db_url is None and node.config["database"]["url"] == own_database and not database.exists():
            migrate(own_database)
        nodes.append(node)
        return node.start()

    yield start
    for node in nodes:
        node.stop()
