"""Results delivered over DICOM TLS to a real dcmtk storescp that verifies the node's client certificate."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from db.session import transaction
from dicom_node.report import publish_result
from dicom_node.send import Sender
from tests.support.tools import require_tool
from tests.dicom_node.report.synthetic import (
    make_analysis,
    make_pet_header,
    make_sessions,
    seed_study,
)
from tests.dicom_node.send.test_send_orthanc import OBJECTS, _events, _rows, _tick_until
from tests.support.node import free_port, wait_for_port
from tests.support.pki import make_test_pki
from tests.support.settings import make_settings


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_storescp(tmp_path: Path, pki: Path) -> Iterator[tuple[int, Path]]:
    """storescp with TLS, requiring a client certificate signed by the test CA (dcmtk's default -rc)."""
    binary = require_tool("storescp")
    port, received = free_port(), tmp_path / "received"
    received.mkdir()
    proc = subprocess.Popen(
        [binary, "-aet", "TLSPACS", "+tls", str(pki / "server.key"), str(pki / "server.crt"),
         "+cf", str(pki / "ca.crt"), "-od", str(received), str(port)],
        env={**os.environ, "TCP_NODELAY": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield port, received
    finally:
        proc.terminate()
        proc.wait(10)


def _destination(port: int, pki: Path, **extra: object) -> dict:
    return {"name": "tls-pacs", "kind": "dicom", "ae_title": "TLSPACS", "host": "127.0.0.1", "port": port,
            "tls": True, "ca_certificates": str(pki / "ca.crt"),
            "client_certificate": str(pki / "client.crt"), "client_private_key": str(pki / "client.key"),
            **extra}


def _publish(tmp_path: Path, destination: dict):  # type: ignore[no-untyped-def]
    db_url = f"sqlite:///{tmp_path / 'node.db'}"
    settings = make_settings(tmp_path, db_url, destinations=[destination])
    sessions = make_sessions(db_url)
    pet = make_pet_header()
    with transaction(sessions) as session:
        study, result = seed_study(session, pet)
        publish_result(session, settings, study, result, make_analysis(), pet)
    return settings, sessions


def test_results_reach_a_tls_peer_that_requires_the_node_certificate(
        tmp_path: Path, pki: Path, tls_storescp: tuple[int, Path]) -> None:
    port, received = tls_storescp
    settings, sessions = _publish(tmp_path, _destination(port, pki))
    sender = Sender(settings, sessions)
    _tick_until(sender, sessions, lambda: all(r.state == "delivered" for r in _rows(sessions)))
    assert len(list(received.iterdir())) == OBJECTS
    assert len(_events(sessions, "stored")) == OBJECTS
    sender.wait_idle()


def test_an_untrusted_tls_peer_gets_nothing(tmp_path: Path, pki: Path, tls_storescp: tuple[int, Path]) -> None:
    port, received = tls_storescp
    other_ca = make_test_pki(tmp_path / "other-pki") / "ca.crt"
    settings, sessions = _publish(tmp_path, _destination(port, pki, ca_certificates=str(other_ca)))
    sender = Sender(settings, sessions)
    sender.tick(wait=True)
    rows = _rows(sessions)
    assert all(r.state == "pending" and r.attempts == 1 and r.last_error for r in rows)
    assert "TLS handshake failed" in rows[0].last_error and "certificate" in rows[0].last_error
    assert not list(received.iterdir())
    sender.wait_idle()
