"""On a real node: a study is analysed (its descriptors and envelope recorded with the result), then a
reader's assessment SR built with highdicom comes back over storescu and is recorded with source dicom —
once, without reopening the study; an SR referencing no result of the node is refused, and kept."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Instance, Job, ReaderAssessment, Result, ResultDescriptors, Study
from db.session import make_engine, make_session_factory
from tests.dicom_node.evaluation.reader_sr import reader_sr, save, study_object
from tests.dicom_node.receive.clients import storescu
from tests.support.dicom import StudyMaker
from tests.support.node import NodeProcess
from tests.support.tools import require_tool

QUICK = {"assembly": {"tick_seconds": 0.2, "settle_seconds": 0},
         "results": {"assessment_intake_seconds": 0.3}}


def _one(sessions: sessionmaker[Session], model: type, *where: object) -> object:
    with sessions() as session:
        return session.scalars(select(model).where(*where)).first()  # type: ignore[arg-type]


def _all(sessions: sessionmaker[Session], model: type, *where: object) -> list:  # type: ignore[type-arg]
    with sessions() as session:
        return list(session.scalars(select(model).where(*where)))  # type: ignore[arg-type]


@pytest.mark.slow
def test_a_reader_sr_sent_back_is_recorded_once_and_the_study_stays_done(
    node_factory: Callable[..., NodeProcess], small_study: StudyMaker, tmp_path: Path
) -> None:
    require_tool("storescu")
    node = node_factory(QUICK)
    engine = make_engine(node.config["database"]["url"])
    sessions = make_session_factory(engine)
    try:
        folder, truth = small_study(seed=31)
        assert storescu(node.port, sorted(folder.glob("*/*.dcm"))).returncode == 0
        result: Result = node.wait_until(lambda: _one(sessions, Result), 120, "a result")  # type: ignore[assignment]

        descriptors = _one(sessions, ResultDescriptors, ResultDescriptors.result_id == result.id)
        assert isinstance(descriptors, ResultDescriptors)
        assert descriptors.results_mode == "live" and descriptors.manufacturer == "SIEMENS"
        assert descriptors.envelope_violations == ["PET voxel size (in-plane) 9.375 mm > 6 mm"]  # 64² over 600 mm
        assert result.summary["envelope_violations"] == descriptors.envelope_violations
        (outside,) = _all(sessions, AuditEvent, AuditEvent.action == "outside-envelope")
        assert outside.outcome == "warning" and "9.375 mm > 6 mm" in (outside.reason or "")

        node_sr = pydicom.dcmread(Path(result.summary["results_folder"]) / f"SR-{result.sr_sop_instance_uid}.dcm",
                                  stop_before_pixels=True)
        # The AI said "undetermined" (no weights installed); an edited copy saying "absent" is a modification.
        mine = save(reader_sr(node_sr, finding="absent", reference="predecessor",
                              texts={"reason": "missed-focus", "comment": "no focus seen"}), tmp_path / "sr")
        stranger = save(reader_sr(study_object(truth.study_uid, accession=truth.accession_number)),
                        tmp_path / "sr")
        assert storescu(node.port, [mine, stranger], calling="PSMA_SYNTH").returncode == 0
        recorded = node.wait_until(lambda: _one(sessions, ReaderAssessment), 30, "the reader's assessment")
        assert isinstance(recorded, ReaderAssessment)
        assert (recorded.result_id, recorded.source, recorded.reader, recorded.verdict, recorded.reader_finding,
                recorded.reason, recorded.comment) == (
            result.id, "dicom", "Reader^Rita", "modified", "absent", "missed-focus", "no focus seen")
        refused = node.wait_until(
            lambda: _all(sessions, AuditEvent, AuditEvent.action == "assessment-sr-refused"), 30, "the refusal")
        assert "references no result of this node" in refused[0].reason and refused[0].outcome == "error"

        assert storescu(node.port, [mine], calling="PSMA_SYNTH").returncode == 0  # a re-send
        time.sleep(1.5)  # several intake ticks
        stored = {i.sop_instance_uid for i in _all(sessions, Instance, Instance.modality == "SR")}
        assert {pydicom.dcmread(mine).SOPInstanceUID, pydicom.dcmread(stranger).SOPInstanceUID} <= stored
        study = _one(sessions, Study)
        assert isinstance(study, Study) and (study.state, study.generation) == ("done", 1)
        assert len(_all(sessions, Job)) == 1 and len(_all(sessions, ReaderAssessment)) == 1
        assert _all(sessions, AuditEvent, AuditEvent.action == "reopened") == []
    finally:
        engine.dispose()
