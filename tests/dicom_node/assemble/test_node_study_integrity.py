"""A real node fed by dcmtk storescu refuses, before any job runs, studies that must not be analysed.

Two patients under one Study Instance UID, a CT in another Frame of Reference than the PET, and a PET
series whose slices differ in Bits Allocated each end as a rejected study with a reason naming the
problem, an audit row, no job and no result; patient names never reach the log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from db.models import OutboxItem
from tests.dicom_node.assemble.test_node_assembly import QUICK, database, send, state_is, story, synth

pytestmark = pytest.mark.slow


def _rewrite(paths: list[Path], **values: Any) -> None:
    for path in paths:
        dataset = pydicom.dcmread(path)
        for keyword, value in values.items():
            setattr(dataset, keyword, value)
        dataset.save_as(path)


def _thirty_two_bit(path: Path) -> None:
    """A PET slice re-encoded as a valid 32-bit image (the PET IOD allows 16 or 32): acceptable on its own,
    so the receiver stores it, but not stackable with the series' 16-bit slices."""
    dataset = pydicom.dcmread(path)
    pixels = dataset.pixel_array.astype(np.int32)
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 32, 32, 31
    dataset.PixelData = pixels.tobytes()
    dataset.save_as(path)


def test_two_patients_other_frame_and_mixed_bits_are_rejected_before_analysis(
    node_factory: Any, tmp_path: Path
) -> None:
    mixed_patients, pet1, ct1 = synth(tmp_path / "patients", seed=31)
    _rewrite(ct1, PatientID="OTHER-4711", PatientName="ROE^RICHARD")
    other_frame, pet2, ct2 = synth(tmp_path / "frame", seed=32)
    _rewrite(ct2, FrameOfReferenceUID=generate_uid())
    mixed_bits, pet3, ct3 = synth(tmp_path / "bits", seed=33)
    _thirty_two_bit(pet3[len(pet3) // 2])
    node = node_factory(QUICK)
    sessions = database(node)
    send(node, pet1 + ct1 + pet2 + ct2 + pet3 + ct3)
    expected = {
        mixed_patients.study_uid: (
            "instances of more than one patient in one study: Patient ID differs (2 values: ",
            "patient-conflict",
        ),
        other_frame.study_uid: ("no CT shares the PET's Frame of Reference", "selection after quiet-period"),
        mixed_bits.study_uid: (
            "PET series mixes Bits Allocated 16 and 32 across its slices; cannot stack them",
            "selection",
        ),
    }
    for uid in expected:
        node.wait_until(state_is(sessions, uid, "rejected", "done", "failed"), 60, "a verdict")
    for uid, (reason, rule) in expected.items():
        study, jobs, results, events = story(sessions, uid)
        assert study.state == "rejected" and reason in (study.state_reason or ""), study.state_reason
        assert jobs == [] and results == []
        rejected = [e for e in events if e.action == "rejected"]
        assert len(rejected) == 1 and rejected[0].detail["rule"] == rule
        assert rejected[0].reason == study.state_reason
    study, *_ = story(sessions, mixed_patients.study_uid)
    reason = study.state_reason or ""
    assert "Patient's Name differs" in reason and "PT instance(s)" in reason and "CT instance(s)" in reason
    assert "OTHER-4711" not in reason and mixed_patients.patient_id not in reason
    with sessions() as session:
        assert session.scalars(select(OutboxItem)).all() == []
    log = node.log_text()
    assert "patient-conflict" in log
    for name in ("ROE^RICHARD", str(mixed_patients.patient_name)):
        assert name not in log
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    rejections = [line for line in lines if mixed_patients.study_uid in json.dumps(line)]
    assert any("rejected" in json.dumps(line) for line in rejections)


def test_opting_in_to_another_frame_of_reference_is_said_in_the_result(
    node_factory: Any, tmp_path: Path
) -> None:
    truth, pet, ct = synth(tmp_path / "frame", seed=34)
    _rewrite(ct, FrameOfReferenceUID=generate_uid())
    opt_in = {"assembly": {**QUICK["assembly"], "allow_different_frame_of_reference": True}}
    node = node_factory({**QUICK, **opt_in})
    sessions = database(node)
    send(node, pet + ct)
    node.wait_until(state_is(sessions, truth.study_uid, "done", "failed", "rejected"), 90, "analysis")
    study, jobs, results, _ = story(sessions, truth.study_uid)
    assert study.state == "done", study.state_reason
    assert jobs[0].flags["ct_match"] == "z_overlap"
    warnings = results[0].summary["warnings"]
    assert any(
        "different Frames of Reference" in w and "allow_different_frame_of_reference" in w for w in warnings
    )
