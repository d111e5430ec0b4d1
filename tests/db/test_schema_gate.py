"""`serve` never runs on a schema older than the code: it refuses with the command to run, or upgrades."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from db.session import current_revision, head_revision, make_engine
from tests.support.node import REPO, write_config


def test_serve_refuses_an_older_schema_and_names_db_upgrade(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, {"database": {"auto_upgrade": False}}, db_url)
    done = subprocess.run(
        [sys.executable, "-m", "dicom_node.cli.main", "--config", str(config), "serve"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 2
    assert "psma-node db upgrade" in done.stderr
    assert f"needs {head_revision()}" in done.stderr
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None, "the refused start must not have touched the schema"
    finally:
        engine.dispose()


def test_serve_upgrades_an_older_schema_when_configured(db_url: str, node_factory) -> None:
    node = node_factory({"database": {"auto_upgrade": True}}, db_url=db_url)
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
    node.stop()
