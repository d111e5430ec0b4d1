"""The migration builds exactly the schema the models describe, on SQLite and PostgreSQL, both ways."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select

from db.audit import os_user
from db.models import AuditEvent, Base
from db.session import (
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    make_session_factory,
    upgrade,
)
from tests.support.node import REPO, write_config


def test_upgrade_from_empty_reaches_head_with_every_table(db_url: str) -> None:
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_models_and_migration_agree(db_url: str) -> None:
    """What `alembic check` verifies: autogenerate finds nothing left to migrate."""
    upgrade(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, Base.metadata)
        assert differences == [], f"models differ from the migration: {differences} (run `make migration`)"
    finally:
        engine.dispose()


def test_downgrade_to_base_then_upgrade_again(db_url: str) -> None:
    upgrade(db_url)
    command.downgrade(alembic_config(db_url), "base")
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert not set(Base.metadata.tables) & set(inspect(engine).get_table_names())
        upgrade(db_url)
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()


def test_db_upgrade_and_current_commands_report_the_revision(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    run = [sys.executable, "-m", "dicom_node.cli.main", "--config", str(config)]
    before = subprocess.run([*run, "db", "current"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert before.returncode == 0, before.stderr
    assert "current: empty" in before.stdout and "psma-node db upgrade" in before.stdout
    done = subprocess.run([*run, "db", "upgrade"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    after = subprocess.run([*run, "db", "current"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert f"current: {head_revision()}" in after.stdout and "up to date" in after.stdout
    engine = make_engine(yaml.safe_load(config.read_text())["database"]["url"])
    try:
        with make_session_factory(engine)() as session:
            event = session.scalars(select(AuditEvent).where(AuditEvent.action == "schema-upgraded")).one()
        expected = ("admin", os_user(), head_revision())
        assert (event.category, event.actor, event.detail["to_revision"]) == expected
    finally:
        engine.dispose()
