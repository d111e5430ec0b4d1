"""Lossy-compressed studies through a real node, sent by dcmtk storescu proposing their transfer syntax.

A PET that is lossy-compressed (it arrives in a lossy syntax, or says Lossy Image Compression 01 although it
travels uncompressed) is stored, then rejected before analysis with the reason and an audit row; a lossy CT is
analysed and the result says so.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import JPEG2000

from tests.dicom_node.assemble.test_node_assembly import QUICK, database, state_is, story, synth
from tests.support.node import NodeProcess
from tests.support.tools import require_tool

pytestmark = pytest.mark.slow
J2K_LOSSY = "1.2.840.10008.1.2.4.91"


def _compress_lossy(paths: list[Path]) -> None:
    """JPEG 2000 at a compression ratio of 10, as an archive that keeps PET/CT lossy would hold it."""
    for path in paths:
        dataset = pydicom.dcmread(path)
        dataset.compress(JPEG2000, j2k_cr=[10])
        dataset.save_as(path)


def _mark_lossy(paths: list[Path]) -> None:
    """Pixels once lossy-compressed, now decompressed: only Lossy Image Compression tells."""
    for path in paths:
        dataset = pydicom.dcmread(path)
        dataset.LossyImageCompression = "01"
        dataset.save_as(path)


def _send(node: NodeProcess, files: list[Path], *options: str) -> None:
    done = subprocess.run(
        [require_tool("storescu"), *options, "-aec", "PSMA_NODE", "-aet", "STORESCU", "127.0.0.1",
         str(node.port), *map(str, files)],
        env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_lossy_pet_is_rejected_with_the_reason_and_a_lossy_ct_is_analysed_with_a_warning(
    node_factory: Any, tmp_path: Path
) -> None:
    j2k_pet, pet1, ct1 = synth(tmp_path / "j2k-pet", seed=41)
    _compress_lossy(pet1)
    flagged_pet, pet2, ct2 = synth(tmp_path / "flagged-pet", seed=42)
    _mark_lossy(pet2)
    lossy_ct, pet3, ct3 = synth(tmp_path / "lossy-ct", seed=43)
    _compress_lossy(ct3)
    node = node_factory(QUICK)
    sessions = database(node)
    _send(node, pet1 + ct1 + pet3 + ct3, "-xw")  # proposes lossy JPEG 2000 (and the uncompressed syntaxes)
    _send(node, pet2 + ct2)

    expected = {
        j2k_pet.study_uid: f"transfer syntax JPEG 2000 Image Compression ({J2K_LOSSY})",
        flagged_pet.study_uid: "Lossy Image Compression (0028,2110) is 01",
    }
    for uid in (*expected, lossy_ct.study_uid):
        node.wait_until(state_is(sessions, uid, "rejected", "done", "failed"), 90, "a verdict")
    for uid, why in expected.items():
        study, jobs, results, events = story(sessions, uid)
        assert study.state == "rejected" and jobs == [] and results == [], study.state_reason
        slices = f"{len(pet1)} of {len(pet1)} slices"
        assert study.state_reason == (
            f"PET is lossy-compressed ({slices} lossy-compressed: {why}): SUV is not measured on lossy "
            "pixels; have the PACS send the PET uncompressed or lossless"
        )
        (rejected,) = [e for e in events if e.action == "rejected"]
        assert rejected.reason == study.state_reason and rejected.outcome == "rejected"

    study, jobs, results, _events = story(sessions, lossy_ct.study_uid)
    assert study.state == "done", study.state_reason
    assert study.ct_series_uid == lossy_ct.ct_series_uid
    assert jobs[0].flags["ct_lossy"] == (
        f"{len(ct3)} of {len(ct3)} slices lossy-compressed: transfer syntax JPEG 2000 Image Compression "
        f"({J2K_LOSSY})"
    )
    warnings = results[0].summary["warnings"]
    assert any(w.startswith(f"CT is lossy-compressed ({len(ct3)} of {len(ct3)} slices") for w in warnings), \
        warnings
