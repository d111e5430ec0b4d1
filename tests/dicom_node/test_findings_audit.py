"""A real node with the TotalSegmentator localiser (stand-in executable) keeps the PROMISE findings, the
reference SUVmeans and how each was found, in the Result row and in the audit event of the finished job."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from db.models import AuditEvent, Result
from dicom_node.synth import SynthOptions, generate_study
from tests.support.fake_totalsegmentator import install_fake_totalsegmentator
from tests.support.tools import require_tool

pytestmark = pytest.mark.slow


def _done_event(url: str) -> dict[str, Any] | None:
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            event = session.scalars(
                select(AuditEvent).where(AuditEvent.category == "job", AuditEvent.action == "done")
            ).first()
            return None if event is None else dict(event.detail)
    finally:
        engine.dispose()


def test_finished_job_audit_holds_reference_suvmeans_and_scores(tmp_path: Path, node_factory) -> None:
    study = tmp_path / "study"
    truth = generate_study(study, SynthOptions(ct_matrix=96, pet_matrix=96, pet_fov_mm=400, extent_mm=600,
                                               seed=3, extra_foci=1))
    fake = install_fake_totalsegmentator(tmp_path / "totalseg", study / "ground_truth.json", head_task=False)
    node = node_factory({
        "assembly": {"quiet_seconds": 3, "ceiling_seconds": 120},
        "localizer": {"kind": "totalsegmentator", "totalsegmentator_command": str(fake.executable),
                      "totalsegmentator_home": str(fake.home)},
    })
    files = sorted(str(p) for p in study.glob("*/*.dcm"))
    sent = subprocess.run(
        [require_tool("storescu"), "-aec", "PSMA_NODE", "127.0.0.1", str(node.port), *files],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TCP_NODELAY": "1"},
    )
    assert sent.returncode == 0, sent.stderr
    url = node.config["database"]["url"]
    detail = node.wait_until(lambda: _done_event(url), 240, "the job/done audit event")

    findings = detail["findings"]
    references = {r["name"]: r for r in findings["references"]}
    assert set(references) == {"blood pool", "spleen", "liver", "parotid glands"}
    spleen = references["spleen"]
    assert spleen["suv_mean"] == pytest.approx(truth.organs["spleen"]["suv"], rel=0.15)
    assert "spleen.nii.gz" in spleen["method"] and "PET voxels" in spleen["method"]
    assert references["parotid glands"]["suv_mean"] is None
    assert "head_glands_cavities" in references["parotid glands"]["note"]
    assert len(findings["foci"]) == len(truth.foci)
    assert all("mipsma" in f and f["mipsma_note"] for f in findings["foci"])
    assert findings["local_category"] == "miT2m"  # two foci in the (tagged) intact prostate

    engine = create_engine(url)
    with Session(engine) as session:
        row = session.scalars(select(Result)).one()
        summary = row.summary
    engine.dispose()
    assert summary["findings"]["foci"][0]["suv_max"] == findings["foci"][0]["suv_max"]
    assert "mask" not in summary["findings"]["foci"][0]
    masks = summary["localisation"]["reference_masks"]
    assert {m["organ"] for m in masks} == set(references)
    assert all(m.get("mask") is None and m.get("affine_lps") is None for m in masks), "no arrays kept"
