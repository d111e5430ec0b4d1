"""The full PACS round trip: Orthanc routes a PET/CT study to a real node, the node analyses it and sends
the SR, the SEG and the SC series back into the same study in Orthanc; dcmtk storescu as the modality too."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from db.models import AuditEvent, OutboxItem
from db.session import make_engine, make_session_factory
from dicom_node.synth import SynthOptions, generate_study
from tests.support.orthanc import OrthancServer
from tests.support.tools import require_tool

pytestmark = pytest.mark.slow
QUICK = {"assembly": {"quiet_seconds": 4, "ceiling_seconds": 120}, "workers": {"lease_seconds": 10},
         "results": {"send_tick_seconds": 0.5}}


def _results_in(orthanc: OrthancServer, study_uid: str) -> list[dict[str, Any]]:
    return [t for t in orthanc.study_instances(study_uid) if t.get("Modality") in ("SR", "OT", "SEG")]


def _study(tmp_path: Path, seed: int) -> tuple[str, list[Path]]:
    truth = generate_study(tmp_path / f"study{seed}", SynthOptions(ct_matrix=96, pet_matrix=48, extent_mm=150,
                                                                   seed=seed))
    files = sorted((tmp_path / f"study{seed}").glob("*/*.dcm"))
    return truth.study_uid, files


def test_orthanc_routes_a_study_to_the_node_and_receives_sr_seg_and_sc_in_the_same_study(
        tmp_path: Path, node_factory) -> None:
    orthanc = OrthancServer(tmp_path / "orthanc", aet="ORTHANC")
    pacs = {"name": "orthanc", "kind": "dicom", "ae_title": "ORTHANC", "host": "127.0.0.1",
            "port": orthanc.dicom_port, "confirm_with_cfind": True}
    node = node_factory({**QUICK, "results": {**QUICK["results"], "destinations": [pacs]}})
    orthanc.modalities["psma"] = ("PSMA_NODE", "127.0.0.1", node.port)
    with orthanc:
        study_uid, files = _study(tmp_path, seed=3)
        for path in files:
            orthanc.upload(path)
        orthanc_study = orthanc.post("/tools/find", {"Level": "Study", "Query": {"StudyInstanceUID": study_uid}})[0]
        orthanc.post("/modalities/psma/store", {"Resources": [orthanc_study], "Synchronous": True})
        results = node.wait_until(
            lambda: len(_results_in(orthanc, study_uid)) >= 6 and _results_in(orthanc, study_uid),
            150, "SR, SEG and SC in Orthanc",
        )
        assert {t["Modality"] for t in results} == {"SR", "OT", "SEG"}
        assert len([t for t in results if t["Modality"] == "SEG"]) == 1
        sr = [t for t in results if t["Modality"] == "SR"]
        sc = [t for t in results if t["Modality"] == "OT"]
        assert len(sr) == 1 and len(sc) >= 1
        assert sr[0]["StudyInstanceUID"] == study_uid and {t["StudyInstanceUID"] for t in sc} == {study_uid}
        assert all(t["SeriesDescription"].startswith("AI") for t in results)
        assert len({t["SeriesInstanceUID"] for t in sc}) == 1
        sessions = make_session_factory(make_engine(node.config["database"]["url"]))
        node.wait_until(lambda: _all_confirmed(sessions), 30, "C-FIND confirmation")
        with sessions() as session:
            stored = session.scalars(select(AuditEvent).where(AuditEvent.action == "stored")).all()
            assert len(stored) == len(results)


def _all_confirmed(sessions) -> bool:
    with sessions() as session:
        states = set(session.scalars(select(OutboxItem.state)))
    return states == {"confirmed"}


def test_storescu_study_comes_back_to_the_sender_after_orthanc_returns(tmp_path: Path, node_factory) -> None:
    """Return to sender, with the sender's PACS down at first: delivered once it is back, exactly once."""
    orthanc = OrthancServer(tmp_path / "orthanc", aet="ORTHANC")
    overrides = {**QUICK, "results": {**QUICK["results"], "return_to_sender": True,
                                      "retry": {"initial_seconds": 1, "max_seconds": 2, "jitter": 0.1}},
                 "node": {"allowed_calling_aes": [{"ae_title": "ORTHANC", "port": orthanc.dicom_port}]}}
    node = node_factory(overrides)
    study_uid, files = _study(tmp_path, seed=4)
    sent = subprocess.run([require_tool("storescu"), "-aec", "PSMA_NODE", "-aet", "ORTHANC", "127.0.0.1",
                           str(node.port), *map(str, files)], env={**os.environ, "TCP_NODELAY": "1"},
                          capture_output=True, text=True, timeout=120)
    assert sent.returncode == 0, sent.stderr
    sessions = make_session_factory(make_engine(node.config["database"]["url"]))

    def failed_attempts() -> bool:
        with sessions() as session:
            return bool(session.scalars(select(AuditEvent).where(AuditEvent.action == "attempt")).first())

    node.wait_until(failed_attempts, 150, "a failed delivery attempt while the PACS is down")
    def all_delivered() -> bool:
        with sessions() as session:
            return set(session.scalars(select(OutboxItem.state))) == {"delivered"}

    with orthanc:
        node.wait_until(all_delivered, 60, "results back at the sender")
        results = _results_in(orthanc, study_uid)
        time.sleep(2.0)  # more send ticks: nothing may arrive twice
        with sessions() as session:
            rows = session.scalars(select(OutboxItem)).all()
            stored = session.scalars(select(AuditEvent).where(AuditEvent.action == "stored")).all()
        assert {r.destination for r in rows} == {"sender:ORTHANC"}
        assert {r.state for r in rows} == {"delivered"} and len(stored) == len(rows) == len(results)
        assert orthanc.count_instances() == len(results)
