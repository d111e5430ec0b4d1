"""Who may talk to the node: calling-AE allow-list (optionally bound to source IP), called AE, TLS, limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.dicom_node.receive.clients import echoscu, pynetdicom_echo, storescu, wait_for
from tests.dicom_node.receive.dicom_files import write_series
from tests.support.pki import make_test_pki


def _rejections(db) -> list[str]:
    return [row.reason for row in db.audit("association", "rejected")]


def test_calling_ae_allow_list_with_source_address_binding(receiving_node, node_db) -> None:
    node = receiving_node({"node": {"allow_any_calling_ae": False, "allowed_calling_aes": [
        {"ae_title": "MODALITY", "hosts": ["127.0.0.0/8"]}, {"ae_title": "PACS", "hosts": ["127.0.0.2"]}]}})
    db = node_db(node)
    assert echoscu(node.port, calling="MODALITY").returncode == 0
    refused = echoscu(node.port, calling="INTRUDER")
    assert refused.returncode != 0 and "Association Rejected" in refused.stdout + refused.stderr
    assert not pynetdicom_echo(node.port, calling="PACS")  # right AE title, wrong source address
    assert pynetdicom_echo(node.port, calling="PACS", bind_address=("127.0.0.2", 0))
    reasons = wait_for(lambda: len(_rejections(db)) == 2 and _rejections(db))
    assert reasons == ["calling AE title 'INTRUDER' not in allowed_calling_aes",
                       "calling AE title 'PACS' not allowed from 127.0.0.1"]
    rows = db.audit("association", "rejected")
    assert [(row.actor, row.peer, row.outcome) for row in rows] == [
        ("INTRUDER", "127.0.0.1", "rejected"), ("PACS", "127.0.0.1", "rejected")]
    accepted = [(row.actor, row.peer) for row in db.audit("association", "accepted")]
    assert ("PACS", "127.0.0.2") in accepted and ("MODALITY", "127.0.0.1") in accepted


def test_called_ae_mismatch_is_rejected(receiving_node, node_db) -> None:
    node = receiving_node()
    refused = echoscu(node.port, called="OTHER_NODE")
    assert refused.returncode != 0 and "Called AE Title Not Recognized" in refused.stdout + refused.stderr
    db = node_db(node)
    assert wait_for(lambda: _rejections(db)) == ["called AE title 'OTHER_NODE' is not 'PSMA_NODE'"]
    assert echoscu(node.port).returncode == 0


def test_max_associations_rejects_the_extra_caller_and_recovers(receiving_node, node_db) -> None:
    node = receiving_node({"node": {"max_associations": 1}})
    ae = AE(ae_title="HOLDER")
    ae.add_requested_context(Verification)
    held = ae.associate("127.0.0.1", node.port, ae_title="PSMA_NODE")
    assert held.is_established
    try:
        second = ae.associate("127.0.0.1", node.port, ae_title="PSMA_NODE")
        assert second.is_rejected
    finally:
        held.release()
    db = node_db(node)
    assert wait_for(lambda: _rejections(db)) == ["max_associations (1) reached"]
    assert wait_for(lambda: pynetdicom_echo(node.port))


# ------------------------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def _tls_node(receiving_node, pki: Path, require_client: bool):
    tls = {"enabled": True, "certificate": str(pki / "server.crt"), "private_key": str(pki / "server.key")}
    if require_client:
        tls.update(ca_certificates=str(pki / "ca.crt"), require_client_certificate=True)
    return receiving_node({"node": {"tls": tls}})


def test_tls_with_server_certificate(tmp_path: Path, certificates: Path, receiving_node, node_db) -> None:
    node = _tls_node(receiving_node, certificates, require_client=False)
    anonymous = ("+tla", "+cf", str(certificates / "ca.crt"))
    assert echoscu(node.port, *anonymous).returncode == 0
    files = write_series(tmp_path, "PT", 3)
    run = storescu(node.port, files, *anonymous)
    assert run.returncode == 0 and len(run.succeeded) == 3, run.output
    assert echoscu(node.port).returncode != 0  # plain TCP to a TLS port fails ...
    assert echoscu(node.port, *anonymous).returncode == 0  # ... and the node keeps serving TLS callers
    db = node_db(node)
    assert len(db.instances()) == 3
    accepted = db.audit("association", "accepted")
    assert accepted and all(row.detail["tls"] is True for row in accepted)
    assert wait_for(lambda: db.audit("association", "rejected"))[0].reason.startswith("TLS handshake failed")


def test_tls_client_certificate_required(certificates: Path, receiving_node, node_db) -> None:
    node = _tls_node(receiving_node, certificates, require_client=True)
    ca = ("+cf", str(certificates / "ca.crt"))
    client = (str(certificates / "client.key"), str(certificates / "client.crt"))
    with_certificate = ("+tls", *client, "-pw", *ca)
    assert echoscu(node.port, *with_certificate).returncode == 0
    assert echoscu(node.port, "+tla", *ca).returncode != 0  # no client certificate: refused
    assert echoscu(node.port, *with_certificate).returncode == 0
    db = node_db(node)
    rejected = wait_for(lambda: db.audit("association", "rejected"))
    assert len(rejected) == 1 and rejected[0].reason.startswith("TLS handshake failed")
    assert rejected[0].detail == {"tls": True, "kind": "tls"} and rejected[0].peer == "127.0.0.1"
    accepted = db.audit("association", "accepted")
    assert accepted[0].detail["peer_certificate"] == "commonName=client"


def test_max_pdu_size_is_what_the_node_offers(tmp_path: Path, receiving_node) -> None:
    node = receiving_node({"node": {"max_pdu_bytes": 16384}})
    files = write_series(tmp_path, "PT", 2, size=128)  # 32 kB each: several PDUs per instance
    run = storescu(node.port, files)
    assert "Max Send PDV: 16372" in run.output  # 16384 minus the PDV item header
    assert len(run.succeeded) == 2, run.output
