"""Session fixtures of the container tests: one engine and one node image per test run, shared by all.

The container tests skip (with the reason) only where no Docker engine can start, e.g. without root or
without the docker.io package; `make test` as root installs and starts everything they need.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.deploy.engine import (
    NODE_IMAGE, Engine, EngineUnavailable, PackageIndex, build_image, ensure_base_image, ensure_wheelhouse,
    serve_index, start_engine,
)
from tests.support.node import REPO


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    try:
        running = start_engine()
    except EngineUnavailable as reason:
        pytest.skip(f"no Docker engine can run here: {reason}")
    try:
        ensure_base_image(running)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="session")
def package_index(engine: Engine) -> Iterator[PackageIndex]:
    yield from serve_index(ensure_wheelhouse())


@pytest.fixture(scope="session")
def node_image(engine: Engine, package_index: PackageIndex) -> str:
    """deploy/Dockerfile built from the working tree, once per run."""
    build_image(engine, NODE_IMAGE, REPO / "deploy" / "Dockerfile", REPO, package_index.build_args)
    return NODE_IMAGE
