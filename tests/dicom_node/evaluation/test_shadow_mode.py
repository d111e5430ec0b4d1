"""Shadow mode against real Orthancs: the result is made, stored, audited and recorded as shadow, the
evaluation PACS gets the SR, SEG and SC, and nothing reaches the clinical PACS — not even as the sender."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from db.models import AuditEvent, OutboxItem, Result, ResultDescriptors
from db.session import make_engine, make_session_factory
from dicom_node.cli.main import cli
from tests.dicom_node.receive.clients import storescu
from tests.support.dicom import StudyMaker
from tests.support.node import NodeProcess
from tests.support.orthanc import OrthancServer
from tests.support.tools import require_tool


@pytest.mark.slow
def test_in_shadow_mode_only_the_evaluation_destination_gets_results(
    node_factory: Callable[..., NodeProcess], small_study: StudyMaker, tmp_path: Path
) -> None:
    require_tool("storescu")
    clinical = OrthancServer(tmp_path / "clinical", aet="CLINICAL")
    evaluation = OrthancServer(tmp_path / "evaluation", aet="EVAL")
    destination = {"kind": "dicom", "host": "127.0.0.1"}
    node = node_factory({
        "assembly": {"tick_seconds": 0.2, "settle_seconds": 0},
        "node": {"allowed_calling_aes": [{"ae_title": "CLINICAL", "port": clinical.dicom_port}]},
        "results": {"mode": "shadow", "return_to_sender": True, "send_tick_seconds": 0.5, "destinations": [
            {**destination, "name": "pacs", "ae_title": "CLINICAL", "port": clinical.dicom_port},
            {**destination, "name": "research", "ae_title": "EVAL", "port": evaluation.dicom_port,
             "evaluation": True},
        ]},
    })
    engine = make_engine(node.config["database"]["url"])
    sessions = make_session_factory(engine)
    try:
        with clinical, evaluation:
            folder, truth = small_study(seed=41)
            assert storescu(node.port, sorted(folder.glob("*/*.dcm")), calling="CLINICAL").returncode == 0

            def delivered() -> list[OutboxItem]:
                with sessions() as session:
                    items = list(session.scalars(select(OutboxItem)))
                return items if items and all(i.state == "delivered" for i in items) else []

            items = node.wait_until(delivered, 150, "every result object delivered")
            assert {i.destination for i in items} == {"research"}
            kinds = {t["Modality"] for t in evaluation.study_instances(truth.study_uid)}
            assert kinds == {"SR", "SEG", "OT"}
            time.sleep(1.0)  # more send ticks: nothing may trickle to the clinical PACS
            assert clinical.count_instances() == 0 and clinical.received_store_count() == 0
            with sessions() as session:
                result = session.scalars(select(Result)).one()
                descriptors = session.scalars(select(ResultDescriptors)).one()
                (shadow,) = session.scalars(select(AuditEvent).where(AuditEvent.action == "shadow-mode")).all()
            assert result.summary["results_mode"] == "shadow" and descriptors.results_mode == "shadow"
            assert shadow.detail["destinations"] == ["research"]
            assert shadow.detail["withheld"] == ["pacs", "the sender CLINICAL"]
            shown = CliRunner().invoke(cli, ["--config", str(node.config_path), "studies", "show",
                                             truth.study_uid])
            assert "shadow mode: sent to evaluation destinations only, never to the clinical PACS" in shown.output
    finally:
        engine.dispose()
