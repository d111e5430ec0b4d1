"""A seeded node database and the dashboard app over it, as admins and RIS clients see it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.web.app import create_app
from tests.db.seed import Seeded, seed
from tests.support.settings import make_settings


@pytest.fixture
def seeded(sessions: sessionmaker[Session], db_url: str, tmp_path: Path) -> Seeded:
    settings = make_settings(tmp_path, db_url)
    done, failed = seed(sessions, settings)
    return Seeded(settings, sessions, done, failed)


@pytest.fixture
def client(seeded: Seeded) -> Iterator[TestClient]:
    with TestClient(create_app(seeded.settings, seeded.sessions)) as test_client:
        yield test_client
