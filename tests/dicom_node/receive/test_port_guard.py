"""The DICOM port against peers that hold connections without speaking DICOM: idle floods, stalls mid-PDU,
garbage and HTTP, one host taking every slot. Each case through real sockets against a real node, with short
timeouts so the tests take seconds; every close is logged and audited once per source and interval."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.dicom_node.receive.clients import (
    NodeDatabase,
    RawPeer,
    associate_request,
    echoscu,
    process_threads,
    pynetdicom_echo,
    wait_for,
)
from tests.support.node import NodeProcess
from tests.support.pki import make_test_pki

ALLOWED = {"allow_any_calling_ae": False, "allowed_calling_aes": [
    {"ae_title": "ECHOSCU", "hosts": ["127.0.0.1"]}, {"ae_title": "PACS", "hosts": ["127.0.0.1"]},
    {"ae_title": "STALLER", "hosts": ["127.0.0.0/8"]}]}


def _node(receiving_node: Callable[..., NodeProcess], **node: Any) -> NodeProcess:
    settings = {"acse_timeout_s": 30, "pdu_timeout_s": 30, **ALLOWED, **node}
    return receiving_node({"node": settings})


def _closures(db: NodeDatabase, peer: str) -> list[Any]:
    return [row for row in db.audit("association") if row.peer == peer and row.action == "connection-closed"]


def _log_lines(node: NodeProcess, peer: str) -> list[dict[str, Any]]:
    lines = Path(node.config["logging"]["file"]).read_text().splitlines()
    return [record for record in map(json.loads, lines) if record.get("peer") == peer]


def _pacs_gets_through(port: int, within: float) -> float | None:
    """Seconds until a C-ECHO from the allowed PACS succeeds (None if not within `within`)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if pynetdicom_echo(port, calling="PACS"):
            return time.monotonic() - start
        time.sleep(0.2)
    return None


class IdleFlood:
    """`count` TCP connections from `sources` that never send a byte; any the node closes is reopened,
    so the node faces `count` idle connections for as long as the flood runs."""

    def __init__(self, port: int, sources: list[str], count: int) -> None:
        self.port = port
        self.sources = sources
        self.count = count
        self.reopened = 0
        self._sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._keep_open, daemon=True)

    def _open(self, index: int) -> socket.socket:
        source = self.sources[index % len(self.sources)]
        return socket.create_connection(("127.0.0.1", self.port), timeout=10, source_address=(source, 0))

    def _keep_open(self) -> None:
        while not self._stop.wait(0.05):
            readable, _, _ = select.select(self._sockets, [], [], 0)
            for sock in readable:  # readable without our sending anything: closed by the node
                index = self._sockets.index(sock)
                sock.close()
                self._sockets[index] = self._open(index)
                self.reopened += 1

    def __enter__(self) -> IdleFlood:
        self._sockets = [self._open(index) for index in range(self.count)]
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self._sockets:
            sock.close()


@contextmanager
def _peers(port: int, sources: list[str]) -> Iterator[list[RawPeer]]:
    peers = [RawPeer(port, source) for source in sources]
    try:
        yield peers
    finally:
        for peer in peers:
            peer.close()


def test_legitimate_echo_succeeds_during_a_100_connection_idle_flood(receiving_node, node_db) -> None:
    node = _node(receiving_node, max_pending_connections=16, max_connections_per_host=4)
    assert node.proc is not None
    assert echoscu(node.port, calling="ECHOSCU").returncode == 0
    baseline = process_threads(node.proc.pid)
    sources = [f"127.0.0.{host}" for host in range(10, 35)]  # 25 hosts x 4 connections
    with IdleFlood(node.port, sources, 100) as flood:
        wait_for(lambda: flood.reopened >= 84, timeout=30)  # the gate holds 16, and keeps closing the rest
        # Waiting connections hold no thread: the flood costs the node one (its audit writer), not 200.
        threads = process_threads(node.proc.pid)
        assert threads <= baseline + 2, (baseline, threads)
        for _ in range(3):
            run = echoscu(node.port, calling="ECHOSCU")
            assert run.returncode == 0, run.stdout + run.stderr
    db = node_db(node)
    rows = wait_for(lambda: [row for source in sources for row in _closures(db, source)])
    assert all(row.reason.startswith("closed to make room: 16 connections waiting to associate") or
               row.reason.startswith("127.0.0.") for row in rows)  # room made, or a source over its share
    counts = [len(_closures(db, source)) for source in sources]
    assert max(counts) == 1 and sum(counts) >= 10, counts  # once per source and minute, however many closes
    assert not _closures(db, "127.0.0.1")  # the legitimate caller's connections were never the ones closed
    assert len(db.audit("association", "accepted")) == 4


def test_eight_associations_stalled_mid_p_data_do_not_keep_the_pacs_out(receiving_node, node_db) -> None:
    node = _node(receiving_node, pdu_timeout_s=2, max_associations=8, max_associations_per_ae=8)
    with _peers(node.port, ["127.0.0.2"] * 4 + ["127.0.0.3"] * 4) as stallers:
        assert [peer.associate("STALLER") for peer in stallers] == [2] * 8
        for peer in stallers:
            peer.stall_mid_p_data()
        waited = _pacs_gets_through(node.port, within=60)
        assert waited is not None and waited < 20, waited  # the PDU timeout (2 s) frees the slots
        assert all(peer.closed_by_node(within=10) for peer in stallers)
    db = node_db(node)
    for source in ("127.0.0.2", "127.0.0.3"):
        rows = wait_for(lambda source=source: _closures(db, source))
        assert len(rows) == 1 and rows[0].reason.startswith("PDU incomplete after pdu_timeout_s (2 s): 10 of 1000")
    assert "Traceback" not in Path(node.config["logging"]["file"]).read_text()


def test_one_source_cannot_take_every_slot(receiving_node, node_db) -> None:
    node = _node(receiving_node, max_connections_per_host=2, max_associations=4)
    with _peers(node.port, ["127.0.0.7"] * 5) as idle, _peers(node.port, []) as stallers:
        # Idle: two may wait for association, the other three are closed at once.
        closed = [peer.closed_by_node(within=1.0) for peer in idle]
        assert sorted(closed) == [False, False, True, True, True], closed
        # Associations: two per source; the third gets a proper A-ASSOCIATE-RJ.
        answers = []
        for _ in range(3):
            stallers.append(RawPeer(node.port, "127.0.0.8"))
            answers.append(stallers[-1].associate("STALLER"))
        assert answers == [2, 2, 3]
        for peer in stallers[:2]:
            peer.stall_mid_p_data()
        assert pynetdicom_echo(node.port, calling="PACS")  # at once, long before any timeout
    db = node_db(node)
    (row,) = wait_for(lambda: _closures(db, "127.0.0.7"))
    assert row.reason == "127.0.0.7 already has 2 connections waiting to associate (max_connections_per_host 2)"
    rejected = [row.reason for row in db.audit("association", "rejected") if row.peer == "127.0.0.8"]
    assert rejected == ["127.0.0.8 already holds 2 associations (max_connections_per_host 2)"]


def test_silent_and_stalled_association_requests_are_closed_after_their_timeouts(receiving_node,
                                                                                  node_db) -> None:
    node = _node(receiving_node, acse_timeout_s=3, pdu_timeout_s=1)
    request = associate_request("STALLER")
    with _peers(node.port, ["127.0.0.11", "127.0.0.12"]) as (silent, stalled):
        stalled.send(request[:20])
        assert stalled.closed_by_node(within=15) and silent.closed_by_node(within=15)
    db = node_db(node)
    (row,) = wait_for(lambda: _closures(db, "127.0.0.11"))
    assert row.reason == "no A-ASSOCIATE-RQ within acse_timeout_s (3 s)" and row.detail["kind"] == "acse-timeout"
    (row,) = wait_for(lambda: _closures(db, "127.0.0.12"))
    assert row.reason == f"A-ASSOCIATE-RQ incomplete after pdu_timeout_s (1 s): 20 of {len(request)} bytes"


def test_garbage_and_http_are_closed_at_once(receiving_node, node_db) -> None:
    node = _node(receiving_node)  # 30 s timeouts: a close within seconds is the gate's doing
    cases = {
        "127.0.0.13": (b"GET / HTTP/1.1\r\nHost: pacs\r\n\r\n", "an HTTP request (first bytes b'GET / HTTP/1.1\\r\\n')"),
        "127.0.0.14": (bytes(range(40, 80)), "not a DICOM association request"),
        "127.0.0.15": (b"\x01\x00\xff\xff\xff\xf0", "A-ASSOCIATE-RQ length 4294967280 outside 68..262144"),
        "127.0.0.16": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "a TLS handshake on a plain DICOM port"),
        "127.0.0.17": (b"\x01\x00\x00\x00\x00\x50" + b"\x00\x01\x00\x00" + b"\xee" * 76, "malformed A-ASSOCIATE-RQ"),
    }
    with _peers(node.port, list(cases)) as peers:
        for peer, (data, _reason) in zip(peers, cases.values()):
            peer.send(data)
        assert all(peer.closed_by_node(within=5) for peer in peers)
    db = node_db(node)
    for source, (_data, reason) in cases.items():
        (row,) = wait_for(lambda source=source: _closures(db, source))
        assert reason in row.reason and row.detail["kind"] == "not-dicom", row.reason
    assert echoscu(node.port, calling="ECHOSCU").returncode == 0
    assert "Traceback" not in Path(node.config["logging"]["file"]).read_text()


def test_closures_are_logged_and_audited_once_per_source_and_interval(receiving_node, node_db) -> None:
    node = _node(receiving_node, connection_report_seconds=2)
    for _ in range(10):
        with _peers(node.port, ["127.0.0.18"]) as (peer,):
            peer.send(b"GET /metrics HTTP/1.1\r\n\r\n")
            assert peer.closed_by_node(within=5)
    db = node_db(node)
    rows = wait_for(lambda: len(_closures(db, "127.0.0.18")) == 2 and _closures(db, "127.0.0.18"), timeout=15)
    assert rows, "no summary after the interval"
    assert rows[0].reason.startswith("an HTTP request")
    assert rows[1].reason == "9 more connection(s) from 127.0.0.18 closed within 2 s (9 not-dicom)"
    assert rows[1].detail["count"] == 9
    assert [record["event"] for record in _log_lines(node, "127.0.0.18")] == [
        "connection closed", "connections closed"]


def test_tcp_reset_mid_pdu_is_one_log_line(receiving_node, node_db) -> None:
    node = _node(receiving_node)
    peer = RawPeer(node.port, "127.0.0.19")
    assert peer.associate("STALLER") == 2
    peer.stall_mid_p_data()
    time.sleep(0.3)  # let the node start reading the PDU body
    peer.reset()
    db = node_db(node)
    (row,) = wait_for(lambda: _closures(db, "127.0.0.19"))
    assert row.reason == "connection lost mid-PDU: Connection reset by peer" and row.detail["kind"] == "lost"
    assert wait_for(lambda: db.audit("association", "closed"))  # the association's own closing row
    lines = [record for record in _log_lines(node, "127.0.0.19") if record["level"] in ("WARNING", "ERROR")]
    assert [record["event"] for record in lines] == ["connection closed"], lines
    assert "Traceback" not in Path(node.config["logging"]["file"]).read_text()
    assert echoscu(node.port, calling="ECHOSCU").returncode == 0


def test_tls_handshakes_run_in_the_gate_under_the_same_timeouts(tmp_path: Path, receiving_node,
                                                                 node_db) -> None:
    pki = make_test_pki(tmp_path / "pki")
    node = _node(receiving_node, acse_timeout_s=2, tls={
        "enabled": True, "certificate": str(pki / "server.crt"), "private_key": str(pki / "server.key")})
    with _peers(node.port, ["127.0.0.21", "127.0.0.22"]) as (silent, plain):
        plain.send(associate_request("ECHOSCU"))  # DICOM without TLS on the TLS port
        assert plain.closed_by_node(within=5) and silent.closed_by_node(within=15)
    db = node_db(node)
    (row,) = wait_for(lambda: _closures(db, "127.0.0.21"))
    assert row.reason == "no TLS handshake and A-ASSOCIATE-RQ within acse_timeout_s (2 s)"
    (row,) = wait_for(lambda: [r for r in db.audit("association", "rejected") if r.peer == "127.0.0.22"])
    assert row.reason.startswith("TLS handshake failed") and row.detail["tls"] is True
    assert echoscu(node.port, "+tla", "+cf", str(pki / "ca.crt"), calling="ECHOSCU").returncode == 0
