"""Clinical vignettes through a real node: each a synthetic study sent with storescu, analysed with the
TotalSegmentator localiser (the stand-in drawing each study's ground truth), and its SR and Secondary
Capture read back as the node wrote them for PACS.

| vignette | what a reader must see |
|---|---|
| a focus touching a hotter bladder | SUVbw peak ≤ SUVbw max (the urine never enters the sphere), "touching" |
| a focus in the pubic bone | site bone, "pubic bone: bone uptake (miM1b if metastasis; …pitfall)", no miT from it |
| a focus in the rectal wall | site rectum (Finding Site Rectum), no miT from it |
| two foci in an intact prostate | miT2m, rule-based and set apart from the AI result |
| prostatectomy status unknown | no category: "miT not suggested: prostatectomy status unknown", nowhere "miTr" |
| spleen hotter than the parotid glands | miPSMA not assessable, with the implausible order as the reason |
| the tracer given only as a code | [18F]PSMA-1007 recognised from the Radiopharmaceutical Code Sequence |
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import pytest
from pydicom import dcmread
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from db.models import Result, Study
from dicom_node.synth import SynthOptions, generate_study
from tests.dicom_node.report.validation import dciodvfy_errors, dsrdump_problems
from tests.support.db import migrate
from tests.support.fake_totalsegmentator import install_fake_totalsegmentator
from tests.support.node import NodeProcess, write_config
from tests.support.tools import require_tool

pytestmark = pytest.mark.slow
PELVIS: dict[str, Any] = {"ct_matrix": 128, "pet_matrix": 96, "pet_fov_mm": 400.0, "extent_mm": 300.0}
VIGNETTES: dict[str, dict[str, Any]] = {
    "hot-bladder": {"seed": 38, "recurrence": False, "near_bladder_focus": True, "near_bladder_gap_mm": 0.0,
                    "bladder_suv": 16.0},
    "pubic-bone": {"seed": 12, "recurrence": False, "site_foci": ("pubic_bone",)},
    "rectal-wall": {"seed": 13, "recurrence": False, "site_foci": ("rectal_wall",)},
    "two-foci-intact": {"seed": 16, "extra_foci": 1},
    "status-unknown": {"seed": 5, "prostatectomy": True, "write_clinical_history": False},
    "spleen-above-parotids": {"seed": 3, "extent_mm": 900.0, "spleen_suv": 25.0},
    "tracer-code-only": {"seed": 14, "tracer_as_code": True},
}


@dataclass
class Delivered:
    """What the node wrote for one vignette: the SR file and its dsrdump text, the SC's comments, SEG labels."""

    sr_path: Path
    sr_text: str
    sc_comments: str
    seg_labels: list[str]

    def groups(self) -> dict[str, hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
        """The SR's measurement groups by their label (first Comment)."""
        groups = hd.sr.srread(self.sr_path).content.get_planar_roi_measurement_groups()
        return {next(i.value for i in g[0].ContentSequence if i.name.meaning == "Comment"): g for g in groups}

    def evaluations(self) -> dict[str, list[str]]:
        """The document-level Qualitative Evaluations' TEXT items by concept name."""
        content = hd.sr.srread(self.sr_path).content
        container = next(i for i in content[0].ContentSequence if i.name.meaning == "Qualitative Evaluations")
        texts: dict[str, list[str]] = {}
        for item in container.ContentSequence:
            if item.value_type.value == "TEXT":
                texts.setdefault(item.name.meaning, []).append(item.value)
        return texts


def _focus_values(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations) -> dict[str, float]:
    return {m.name.meaning: float(m.value) for m in group.get_measurements()}


def _texts(group: hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations, meaning: str) -> list[str]:
    return [i.value for i in group[0].ContentSequence if i.name.meaning == meaning]


def _results(url: str) -> dict[str, str]:
    """Study UID -> results folder of each published result."""
    engine = create_engine(url)
    try:
        with Session(engine) as session:
            rows = session.execute(select(Study.study_uid, Result.summary).join(Result, Result.study_id == Study.id))
            return {uid: summary["results_folder"] for uid, summary in rows if summary.get("results_folder")}
    finally:
        engine.dispose()


def _all_results(url: str) -> dict[str, str] | None:
    found = _results(url)
    return found if len(found) == len(VIGNETTES) else None


def _read(folder: Path) -> Delivered:
    sr_path = next(folder.glob("SR-*.dcm"))
    assert dciodvfy_errors(sr_path) == []
    status, errors, text = dsrdump_problems(sr_path)
    assert status == 0 and errors == []
    scs = sorted((dcmread(p, stop_before_pixels=True) for p in folder.glob("SC-*.dcm")),
                 key=lambda ds: int(ds.InstanceNumber))
    segs = [dcmread(p, stop_before_pixels=True) for p in folder.glob("SEG-*.dcm")]
    labels = [str(s.SegmentLabel) for seg in segs for s in seg.SegmentSequence]
    return Delivered(sr_path, text, str(scs[0].ImageComments), labels)


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Delivered]]:
    """Every vignette sent to one node (TotalSegmentator stand-in serving all of them), results read back."""
    root = tmp_path_factory.mktemp("vignettes")
    truths = {}
    for name, options in VIGNETTES.items():
        truths[name] = generate_study(root / "studies" / name, SynthOptions(**{**PELVIS, **options}))
    fake = install_fake_totalsegmentator(root / "totalseg", [root / "studies" / n / "ground_truth.json"
                                                             for n in VIGNETTES])
    config = write_config(root / "node", {
        "assembly": {"quiet_seconds": 2, "ceiling_seconds": 120},
        "localizer": {"kind": "totalsegmentator", "totalsegmentator_command": str(fake.executable),
                      "totalsegmentator_home": str(fake.home)},
    })
    node = NodeProcess(config)
    migrate(node.config["database"]["url"])
    with node:
        for name in VIGNETTES:
            files = sorted(str(p) for p in (root / "studies" / name).glob("*/*.dcm"))
            sent = subprocess.run([require_tool("storescu"), "-aec", "PSMA_NODE", "127.0.0.1", str(node.port), *files],
                                  capture_output=True, text=True, timeout=300,
                                  env={**os.environ, "TCP_NODELAY": "1"})
            assert sent.returncode == 0, sent.stderr
        url = node.config["database"]["url"]
        folders = node.wait_until(lambda: _all_results(url), 420, "a published result for every vignette")
    yield {name: _read(Path(folders[truths[name].study_uid])) for name in VIGNETTES}


def _hot_bladder(case: Delivered) -> None:
    name, group = next((n, g) for n, g in case.groups().items() if n.startswith("Focus 1") and n.endswith("PET"))
    values = _focus_values(group)
    assert _texts(group, "Relation to urinary bladder")[0].startswith("touching")
    method = _texts(group, "SUVbw peak method")[0]
    if "SUVbw peak" in values:
        assert values["SUVbw peak"] <= values["SUVbw max"], name
        assert "ml averaged" in method
    else:
        assert method.startswith("none: "), method
    assert "SUVbw max" in case.sc_comments


def _pubic_bone(case: Delivered) -> None:
    names = list(case.groups())
    assert names[0] == "Focus 1 (left pubic bone), PET", names
    group = case.groups()[names[0]]
    for measurement in group.get_measurements():
        assert [s.value for s in measurement.finding_sites] == [hd.sr.CodedConcept("272673000", "SCT", "Bone")]
    assert _texts(group, "Finding")[-1] == ("left pubic bone: bone uptake (miM1b if metastasis; unspecific bone "
                                           "uptake is a known [18F]PSMA-1007 pitfall)")
    category = case.evaluations()["Rule-based PROMISE V2 category, independent of the AI"][0]
    assert "miT0" in category and "not used: focus 1 (left pubic bone)" in category
    assert "Focus 1, left pubic bone: SUVbw max" in case.sc_comments and "miM1b if metastasis" in case.sc_comments
    assert any(label.startswith("Focus 1: left pubic bone, SUVbw max") for label in case.seg_labels)


def _rectal_wall(case: Delivered) -> None:
    group = case.groups()["Focus 1 (rectal wall), PET"]
    for measurement in group.get_measurements():
        assert [s.value for s in measurement.finding_sites] == [hd.sr.CodedConcept("34402009", "SCT", "Rectum")]
    assert "miT0" in case.evaluations()["Rule-based PROMISE V2 category, independent of the AI"][0]
    assert "Focus 1, rectal wall: SUVbw max" in case.sc_comments


def _two_foci_intact(case: Delivered) -> None:
    assert {"Focus 1 (prostate), PET", "Focus 2 (prostate), PET"} <= set(case.groups())
    category = case.evaluations()["Rule-based PROMISE V2 category, independent of the AI"][0]
    assert category.startswith("Rule-based PROMISE V2 suggestion, independent of the AI classifier: miT2m "
                               "(2 foci in the prostate; extension not assessed)")
    ai = case.evaluations()["AI classifier result"][0]
    assert ai.startswith("AI classifier not run") and "miT" not in ai
    assert "| Rule-based PROMISE V2 suggestion, independent of the AI classifier: miT2m" in case.sc_comments


def _status_unknown(case: Delivered) -> None:
    category = case.evaluations()["Rule-based PROMISE V2 category, independent of the AI"][0]
    assert category.endswith("miT not suggested: prostatectomy status unknown")
    group = case.groups()["Focus 1 (prostate bed), PET"]
    assert _texts(group, "Finding")[-1] == ("PSMA-avid focus in the prostate-bed region; no miT category: "
                                           "prostatectomy status unknown")
    everything = " ".join(" ".join(v) for v in case.evaluations().values())
    assert "miTr" not in everything and "miTr" not in case.sc_comments
    assert "miT not suggested: prostatectomy status unknown" in case.sc_comments


def _spleen_above_parotids(case: Delivered) -> None:
    assessment = case.evaluations()["miPSMA assessment"][0]
    assert assessment.startswith("miPSMA score not assessable: implausible reference order: spleen SUVbw mean "
                                 "2"), assessment
    for name, group in case.groups().items():
        if name.startswith("Focus"):
            assert "miPSMA" not in _focus_values(group), name
            assert _texts(group, "miPSMA assessment")[0].startswith("miPSMA not assessable (implausible references)")
    assert "miPSMA not assessable (implausible references)" in case.sc_comments


def _tracer_code_only(case: Delivered) -> None:
    assessment = case.evaluations()["miPSMA assessment"][0]
    assert "tracer 'PSMA-1007 F^18^' (Radiopharmaceutical Code Sequence 126758, DCM)" in assessment
    assert "spleen instead of liver" in assessment


CHECKS: dict[str, Callable[[Delivered], None]] = {
    "hot-bladder": _hot_bladder, "pubic-bone": _pubic_bone, "rectal-wall": _rectal_wall,
    "two-foci-intact": _two_foci_intact, "status-unknown": _status_unknown,
    "spleen-above-parotids": _spleen_above_parotids, "tracer-code-only": _tracer_code_only,
}


@pytest.mark.parametrize("vignette", list(VIGNETTES))
def test_vignette_reads_as_a_physician_can_sign_it(delivered: dict[str, Delivered], vignette: str) -> None:
    case = delivered[vignette]
    assert "NOT FOR DIAGNOSTIC USE" in case.sc_comments and "AI classifier" in case.sc_comments
    CHECKS[vignette](case)
