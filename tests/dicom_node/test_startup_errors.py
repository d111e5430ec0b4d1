"""Start-up problems through the real CLI: one line naming the setting, the value and the fix, exit 2,
nothing started, never a traceback; `config check` finds what it can without leaving anything behind."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from tests.support.db import POSTGRES_URL
from tests.support.node import write_config
from tests.support.tools import require_tool

PSMA_NODE = str(Path(sys.executable).parent / "psma-node")


def _run(config: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PSMA_NODE, "--config", str(config), *command], capture_output=True, text=True, timeout=120
    )


def _refused(config: Path, *command: str) -> str:
    """Run `serve` (or the command given), assert it refused as the contract says, return its one line."""
    result = _run(config, *(command or ("serve",)))
    assert result.returncode == 2, result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and str(config) in lines[0], "names the file it read"
    return lines[0]


def _check_refused(config: Path) -> str:
    return _refused(config, "config", "check")


def _config(tmp_path: Path, overrides: dict[str, Any]) -> Path:
    return write_config(tmp_path / "node", {"workers": {"count": 0}, **overrides})


def _plain(url: str) -> str:
    """The test server's URL in the form admins write: postgresql:// without a driver name."""
    return "postgresql://" + url.split("://", 1)[1]


def _missing_database_url(scheme: str) -> str:
    if not POSTGRES_URL:
        pytest.skip("PSMA_TEST_POSTGRES_URL not set (the README test command sets it)")
    parsed = make_url(POSTGRES_URL).set(database="psma_no_such_database")
    return scheme + "://" + parsed.render_as_string(hide_password=False).split("://", 1)[1]


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_missing_postgres_database_names_it_and_how_to_create_it(tmp_path: Path, scheme: str) -> None:
    line = _refused(_config(tmp_path, {"database": {"url": _missing_database_url(scheme)}}))
    assert "database.url" in line and "psma_no_such_database" in line
    assert "does not exist" in line and "createdb" in line
    assert not (tmp_path / "node" / "storage").exists(), "nothing is created before the database answers"


def test_plain_postgresql_url_runs_the_node(tmp_path: Path, node_factory) -> None:
    """`postgresql://` (psycopg 3 to SQLAlchemy 2.1, which is not installed) runs on the installed driver."""
    if not POSTGRES_URL:
        pytest.skip("PSMA_TEST_POSTGRES_URL not set (the README test command sets it)")
    from tests.support.db import postgres_database

    databases = postgres_database()
    url = next(databases)
    try:
        node = node_factory({"workers": {"count": 0}}, db_url=_plain(url))
        echo = subprocess.run(
            [require_tool("echoscu"), "-aec", "PSMA_NODE", "127.0.0.1", str(node.port)],
            capture_output=True, text=True, timeout=30,
        )
        assert echo.returncode == 0, echo.stderr
        node.stop()
    finally:
        databases.close()


def test_unreachable_postgres_says_connect_and_hides_the_password(tmp_path: Path) -> None:
    line = _refused(_config(tmp_path, {"database": {"url": "postgresql://psma:hunter2@127.0.0.1:1/psma"}}))
    assert "database.url postgresql+psycopg2://psma:***@127.0.0.1:1/psma" in line, "on the installed driver"
    assert "cannot connect" in line and "start PostgreSQL" in line
    assert "hunter2" not in line


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://psma:hunter2@127.0.0.1/psma", "mysql is not supported"),
        ("mysql+mysqldb://psma:hunter2@127.0.0.1/psma", "mysql is not supported"),
        ("garbage", "is not a database URL"),
        ("oracle+nosuchdriver://psma:hunter2@db/psma", "oracle is not supported"),
    ],
)
def test_unusable_database_url_is_refused_by_serve_and_config_check(
    tmp_path: Path, url: str, expected: str
) -> None:
    config = _config(tmp_path, {"database": {"url": url}})
    for line in (_refused(config), _check_refused(config)):
        assert "database.url" in line and expected in line and "sqlite:///" in line
        assert "hunter2" not in line


def _blocker(tmp_path: Path) -> Path:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return blocker


@pytest.mark.parametrize(
    ("key", "overrides"),
    [
        ("storage.directory", lambda b: {"storage": {"directory": str(b / "storage")}}),
        ("storage.results_directory", lambda b: {"storage": {"results_directory": "/proc/psma/results"}}),
        ("logging.file", lambda b: {"logging": {"file": "/proc/psma/node.log"}}),
        ("database.url", lambda b: {"database": {"url": f"sqlite:///{b}/db/node.db"}}),
    ],
)
def test_folder_that_cannot_be_created_is_named(tmp_path: Path, key: str, overrides: Any) -> None:
    config = _config(tmp_path, overrides(_blocker(tmp_path)))
    checked = _check_refused(config)
    line = _refused(config)
    for text in (checked, line):
        assert text.startswith(f"error: {key} ") and "cannot create" in text
    assert not (tmp_path / "node" / "storage").exists() or key == "storage.directory"


def test_config_check_leaves_nothing_behind(tmp_path: Path) -> None:
    config = write_config(tmp_path / "node", {"storage": {"directory": str(tmp_path / "new" / "storage")}})
    before = sorted(p.name for p in tmp_path.rglob("*"))
    checked = _run(config, "config", "check")
    assert checked.returncode == 0, checked.stderr
    assert f"configuration OK: {config.resolve()}" in checked.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_tls_certificate_that_is_not_pem_is_named(tmp_path: Path) -> None:
    certificate = tmp_path / "node.crt"
    certificate.write_bytes(b"\x30\x82\x03\x0a" + bytes(range(200)))  # a DER-looking blob
    key = tmp_path / "node.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    config = _config(tmp_path, {"node": {"tls": {"enabled": True, "certificate": str(certificate),
                                                  "private_key": str(key)}}})
    for line in (_check_refused(config), _refused(config)):
        assert f"node.tls.certificate {certificate}: not a PEM file" in line and "openssl x509" in line


def test_dicom_port_in_use_is_named(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = _config(tmp_path, {"node": {"port": port}})
        line = _refused(config)
    assert f"node.port {port} on 127.0.0.1: cannot listen" in line and "Address already in use" in line
    assert not (tmp_path / "node" / "storage").exists()


def test_empty_config_file_is_refused_naming_the_file(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("# nothing here yet\n")
    result = _run(config, "serve")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"error: configuration file {config} is empty: write the node's settings into it "
        f"(start from {Path(__file__).resolve().parents[2] / 'config.yaml'}), "
        "or write {} to run on the built-in defaults"
    )


def test_empty_dashboard_token_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, {"dashboard": {"enabled": True, "tokens": ["real-token-abc", ""]}})
    for line in (_refused(config), _check_refused(config)):
        assert "dashboard.tokens" in line and "token 1 is empty" in line
        assert "real-token-abc" not in line


def test_anonymous_dashboard_on_the_network_is_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, {"dashboard": {"enabled": True, "bind": "0.0.0.0", "allow_anonymous": True}})
    for line in (_refused(config), _check_refused(config)):
        assert "dashboard.allow_anonymous true with dashboard.bind 0.0.0.0" in line
        assert "bind to 127.0.0.1" in line
    loopback = yaml.safe_load(config.read_text())
    loopback["dashboard"]["bind"] = "127.0.0.1"
    config.write_text(yaml.safe_dump(loopback))
    checked = _run(config, "config", "check")
    assert checked.returncode == 0, checked.stderr
