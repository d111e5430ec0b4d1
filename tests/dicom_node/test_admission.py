"""The allow-list's rules where the test machine has no address to send from: demo titles from a network
address, the reserve's validation, and the calling AE title as the gate reads it from the raw request."""

from __future__ import annotations

import pytest

from dicom_node.admission import Held, admit, ae_titles, slot_refusal
from dicom_node.config import ConfigError, NodeSettings, load_settings
from tests.dicom_node.receive.clients import associate_request


def _node(**values: object) -> NodeSettings:
    return NodeSettings.model_validate({"allowed_calling_aes": [
        {"ae_title": "PACS", "hosts": ["10.0.0.5"]}, {"ae_title": "MODALITY"}], **values})


def test_demo_titles_come_from_loopback_only() -> None:
    node = _node()
    assert admit(node, "STORESCU", "127.0.0.3").allowed
    refused = admit(node, "PSMA_SYNTH", "10.0.0.9")
    assert not refused.allowed and refused.reason.startswith(
        "calling AE title 'PSMA_SYNTH' is a demo title (node.demo_calling_aes), accepted from loopback "
        "addresses only, not from 10.0.0.9")
    assert not admit(_node(demo_calling_aes=[]), "STORESCU", "127.0.0.1").allowed


def test_only_an_entry_naming_the_source_makes_a_caller_bound() -> None:
    node = _node()
    assert admit(node, "PACS", "10.0.0.5").bound
    assert not admit(node, "PACS", "10.0.0.6").allowed
    assert admit(node, "MODALITY", "10.0.0.6").allowed and not admit(node, "MODALITY", "10.0.0.6").bound
    assert not admit(node.model_copy(update={"allow_any_calling_ae": True}), "ANY", "10.0.0.6").bound


def test_the_reserve_binds_unbound_callers_only() -> None:
    node = _node()
    full_share = Held(from_peer=0, with_ae=0, unbound=6, in_all=6)
    assert slot_refusal(node, "PACS", "10.0.0.5", admit(node, "PACS", "10.0.0.5"), full_share) is None
    modality = admit(node, "MODALITY", "10.0.0.7")
    assert "their share" in str(slot_refusal(node, "MODALITY", "10.0.0.7", modality, full_share))
    everything = Held(from_peer=0, with_ae=0, unbound=6, in_all=8)
    assert slot_refusal(node, "PACS", "10.0.0.5", admit(node, "PACS", "10.0.0.5"), everything) == \
        "max_associations (8) reached"


def test_a_reserve_leaving_unbound_callers_nothing_is_refused(tmp_path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("node:\n  max_associations: 2\n  reserved_for_bound_aes: 2\n"
                      "  allowed_calling_aes: [{ae_title: PACS, hosts: [10.0.0.5]}]\n")
    with pytest.raises(ConfigError, match=r"reserved_for_bound_aes \(2\) must be below max_associations"):
        load_settings(config, environ={})
    config.write_text("node:\n  max_associations: 1\n  allow_any_calling_ae: true\n")
    assert load_settings(config, environ={}).node.max_associations == 1  # no one to reserve for: no reserve


def test_the_gate_reads_the_ae_titles_from_the_raw_request() -> None:
    assert ae_titles(associate_request("PACS_7", called="NODE_2")) == ("PACS_7", "NODE_2")
