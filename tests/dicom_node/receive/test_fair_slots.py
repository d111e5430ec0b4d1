"""Fair association slots through real sockets: AE titles bound to no host cannot starve a PACS bound to its
address, one calling AE title cannot take every slot, demo titles are for loopback only, held associations
are audited once per source, and a network-facing port with unbound titles is warned about."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dicom_node.receive.clients import NodeDatabase, RawPeer, echoscu, storescu, wait_for
from tests.dicom_node.receive.dicom_files import write_series
from tests.support.node import REPO, write_config

PACS_BOUND = {"ae_title": "PACS", "hosts": ["127.0.0.1"]}
MODALITY_UNBOUND = {"ae_title": "MODALITY"}


def _rejections(db: NodeDatabase) -> list[tuple[str, str]]:
    return [(row.peer, row.reason) for row in db.audit("association", "rejected")]


@pytest.mark.parametrize("processes", [1, 0], ids=["counted-by-the-gate", "counted-in-serve"])
def test_unbound_callers_holding_every_slot_they_may_take_do_not_keep_the_bound_pacs_out(
        tmp_path: Path, processes: int, receiving_node, node_db) -> None:
    node = receiving_node({"node": {
        "allow_any_calling_ae": False, "allowed_calling_aes": [PACS_BOUND, MODALITY_UNBOUND],
        "max_associations": 8, "max_associations_per_ae": 4, "reserved_for_bound_aes": 2,
        "network_timeout_s": 8, "receiving_processes": processes}})
    # The starving attack: a demo title (STORESCU) from 8 loopback addresses, plus an unbound modality title.
    storescu_peers = [RawPeer(node.port, f"127.0.0.{host}") for host in range(2, 10)]
    modality_peers = [RawPeer(node.port, "127.0.0.10") for _ in range(2)] + [RawPeer(node.port, "127.0.0.11")]
    peers = storescu_peers + modality_peers
    try:
        assert [peer.associate("STORESCU") for peer in storescu_peers] == [2] * 4 + [3] * 4
        assert [peer.associate("MODALITY") for peer in modality_peers] == [2, 2, 3]
        # Six unbound associations are held, their whole share; the PACS stores a study meanwhile.
        study = write_series(tmp_path / "study", "CT", 5)
        sent = storescu(node.port, study, calling="PACS")
        assert sent.returncode == 0 and len(sent.succeeded) == 5, sent.output
        assert echoscu(node.port, calling="PACS").returncode == 0
        assert not any(peer.closed_by_node(within=0.01) for peer in storescu_peers[:4] + modality_peers[:2])
        # Held without a word, they are closed after network_timeout_s like any idle association.
        assert all(peer.closed_by_node(within=20) for peer in storescu_peers[:4] + modality_peers[:2])
    finally:
        for peer in peers:
            peer.close()
    db = node_db(node)
    assert len(db.instance_uids()) == 5
    share = ("callers bound to no host already hold 6 associations, their share: the other 2 are kept for "
             "allowed_calling_aes entries with hosts (reserved_for_bound_aes)")
    per_ae = "calling AE title 'STORESCU' already holds 4 associations (max_associations_per_ae 4)"
    assert sorted(_rejections(db)) == sorted([(f"127.0.0.{host}", per_ae) for host in range(6, 10)]
                                             + [("127.0.0.11", share)])
    # Once per source and interval: 127.0.0.10 held two, one row now (the other is counted for the summary).
    held = wait_for(lambda: len([r for r in db.audit("association", "connection-closed")
                                 if r.detail.get("kind") == "idle-timeout"]) == 5
                    and db.audit("association", "connection-closed"))
    rows = {row.peer: row for row in held if row.detail.get("kind") == "idle-timeout"}
    assert sorted(rows) == ["127.0.0.10", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
    assert rows["127.0.0.2"].reason == "association of 'STORESCU' idle for network_timeout_s (8 s): aborted"
    assert rows["127.0.0.2"].actor == "STORESCU"
    accepted = {(row.actor, row.peer) for row in db.audit("association", "accepted")}
    assert ("PACS", "127.0.0.1") in accepted


def test_a_demo_title_listed_by_the_admin_follows_its_entry(receiving_node, node_db) -> None:
    node = receiving_node({"node": {"allow_any_calling_ae": False, "allowed_calling_aes": [
        {"ae_title": "STORESCU", "hosts": ["127.0.0.2"]}]}})
    assert echoscu(node.port, calling="PSMA_SYNTH").returncode == 0  # a demo title, from loopback
    assert echoscu(node.port, calling="STORESCU").returncode != 0  # listed: only from 127.0.0.2 now
    db = node_db(node)
    assert wait_for(lambda: _rejections(db)) == [("127.0.0.1", "calling AE title 'STORESCU' not allowed from "
                                                                "127.0.0.1")]


def test_serve_config_check_and_doctor_warn_about_unbound_titles_on_a_network_port(
        tmp_path: Path, receiving_node) -> None:
    exposed = {"node": {"bind": "0.0.0.0", "allow_any_calling_ae": False,
                        "allowed_calling_aes": [PACS_BOUND, MODALITY_UNBOUND]}}
    node = receiving_node(exposed)
    warning = ("calling AE title(s) MODALITY allowed from any host on 0.0.0.0:"
               f"{node.port}: AE titles are not secret")
    lines = [json.loads(line) for line in Path(node.config["logging"]["file"]).read_text().splitlines()]
    (logged,) = [line for line in lines if line["event"] == "calling AE titles open to any host"]
    assert logged["level"] == "WARNING" and logged["reason"].startswith(warning)

    check = _cli(node.config_path, "config", "check")
    assert check.returncode == 0 and f"warning: {warning}" in check.stderr
    doctor = _cli(node.config_path, "doctor", "--json", "--timeout", "2")
    (calling,) = [c for c in json.loads(doctor.stdout) if c["check"] == "calling AEs"]
    assert calling["status"] == "WARN" and calling["message"].startswith(warning)

    loopback = write_config(tmp_path / "loopback", {"node": {
        "allow_any_calling_ae": False, "allowed_calling_aes": [MODALITY_UNBOUND]}})
    quiet = _cli(loopback, "config", "check")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr


def _cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicom_node.cli.main", "--config", str(config), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=120)

