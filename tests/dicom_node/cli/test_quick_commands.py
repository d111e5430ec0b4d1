"""The everyday commands load no inference stack: `--version`, `config check`, `studies list`, `outbox list`
(and `--help`, which imports every command module, still loads no torch or MONAI). Nor do they load the
SQLAlchemy ORM: ~0.1 s of the 0.5 s they may take.

Checked by what a fresh interpreter has imported after running the command, not by timing it (timings
are flaky on shared cores; `bench/bench_cli.py` prints them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from db.session import upgrade

INFERENCE = ("torch", "monai")  # ~2.5 s of imports
# and what only the DICOM, synthesis, rendering and migration paths need, and the ORM (db.listings is Core)
HEAVY = (*INFERENCE, "pydicom", "scipy", "pynetdicom", "alembic", "PIL", "sqlalchemy.orm")

PROBE = """
import json, sys
from dicom_node.cli.main import cli
try:
    cli(sys.argv[1:], prog_name="psma-node")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("quick")
    url = f"sqlite:///{folder / 'node.db'}"
    upgrade(url)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump({"database": {"url": url, "auto_upgrade": False}}))
    return path


@pytest.mark.parametrize(
    ("args", "forbidden"),
    [
        pytest.param(args, HEAVY if args != ["--help"] else INFERENCE, id=" ".join(args))
        for args in (["--version"], ["config", "check"], ["studies", "list"], ["outbox", "list"], ["--help"])
    ],
)
def test_everyday_command_imports_no_inference_stack(
    config: Path, args: list[str], forbidden: tuple[str, ...]
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "--config", str(config), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome["code"] in (0, None), done.stderr
    loaded = [m for m in outcome["loaded"] if m in forbidden]
    assert loaded == [], f"`psma-node {' '.join(args)}` imported {loaded}"


def test_analyze_still_resolves_and_shows_its_help(config: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dicom_node.cli.main", "--config", str(config), "analyze", "--help"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "DICOM_DIR" in done.stdout
