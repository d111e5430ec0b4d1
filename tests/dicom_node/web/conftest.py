"""A seeded node database and the dashboard app over it, as admins and RIS clients see it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from db.session import make_engine, make_session_factory, transaction
from dicom_node.config import Settings
from dicom_node.web.app import create_app
from dicom_node.web.auth import hash_password
from tests.db.seed import SeededStudy, migrate, seed_study, seed_worker

PASSWORD = "correct horse battery"
TOKEN = "ris-token-0123456789"
FAST_HASH = hash_password(PASSWORD, iterations=1000)


@dataclass
class Seeded:
    settings: Settings
    sessions: sessionmaker[Session]
    done: SeededStudy
    failed: SeededStudy


def make_settings(tmp_path: Path, url: str, **dashboard: object) -> Settings:
    (tmp_path / "storage").mkdir(parents=True, exist_ok=True)
    (tmp_path / "results").mkdir(exist_ok=True)
    return Settings.model_validate(
        {
            "storage": {
                "directory": str(tmp_path / "storage"),
                "results_directory": str(tmp_path / "results"),
            },
            "database": {"url": url},
            "node": {"min_free_disk_mb": 0},
            "dashboard": {
                "users": [{"name": "alice", "password_hash": FAST_HASH}],
                "tokens": [TOKEN],
                "session_secret": "test-secret",
                "allowed_hosts": ["testserver"],  # the name FastAPI's TestClient sends
                **dashboard,
            },
        }
    )


def seed(sessions: sessionmaker[Session], settings: Settings) -> tuple[SeededStudy, SeededStudy]:
    storage, results = Path(settings.storage.directory), Path(settings.storage.results_directory)
    with transaction(sessions) as session:
        done = seed_study(
            session,
            storage=storage,
            results=results,
            accession="ACC-DONE",
            patient_name="Sentinel^Zebra",
            delivered_at=dt.datetime.now(dt.timezone.utc),
        )
        failed = seed_study(
            session,
            storage=storage,
            results=results,
            accession="ACC-FAIL",
            state="failed",
            reason="SUV: RadiopharmaceuticalStartDateTime missing",
        )
        seed_worker(session)
    return done, failed


@pytest.fixture
def seeded(db_url: str, tmp_path: Path) -> Iterator[Seeded]:
    migrate(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    settings = make_settings(tmp_path, db_url)
    done, failed = seed(sessions, settings)
    yield Seeded(settings, sessions, done, failed)
    engine.dispose()


@pytest.fixture
def client(seeded: Seeded) -> Iterator[TestClient]:
    with TestClient(create_app(seeded.settings, seeded.sessions)) as test_client:
        yield test_client
