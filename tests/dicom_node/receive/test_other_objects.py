"""Objects the analysis does not read (a reader's SR, here) arriving for a settled study are stored and
counted, but do not reopen it, queue a new analysis or change who sent it; new PET/CT data still does."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pydicom

from tests.dicom_node.evaluation.reader_sr import reader_sr, save, study_object
from tests.dicom_node.receive.clients import NodeDatabase, storescu, wait_for
from tests.support.dicom import StudyMaker
from tests.support.node import NodeProcess


def test_an_sr_for_a_settled_study_neither_reopens_it_nor_queues_an_analysis(
    receiving_node: Callable[..., NodeProcess], node_db: Callable[[NodeProcess], NodeDatabase],
    small_study: StudyMaker, tmp_path: Path,
) -> None:
    node = receiving_node({"assembly": {"tick_seconds": 0.2, "settle_seconds": 0}})
    db = node_db(node)
    folder, truth = small_study(seed=21)
    files = sorted(folder.glob("*/*.dcm"))
    assert storescu(node.port, files, calling="STORESCU").returncode == 0
    queued = wait_for(lambda: [s for s in db.studies() if s.state == "queued"], timeout=60)
    (before,) = queued  # type: ignore[misc]
    sr = save(reader_sr(study_object(truth.study_uid, accession=truth.accession_number)), tmp_path / "sr")
    assert storescu(node.port, [sr], calling="PSMA_SYNTH").returncode == 0
    wait_for(lambda: len(db.instances()) == len(files) + 1, timeout=30)
    time.sleep(1.0)  # several assembly ticks: a reopening would have happened by now
    (after,) = db.studies()
    assert (after.state, after.generation) == ("queued", 1)
    assert after.instance_count == before.instance_count + 1
    assert after.assessed_instance_count == before.assessed_instance_count + 1
    assert (after.calling_ae, after.last_received_at) == (before.calling_ae, before.last_received_at)
    assert db.scalar("SELECT count(*) FROM jobs") == 1
    assert db.audit("study", "reopened") == []
    sr_row = [i for i in db.instances() if i.modality == "SR"]
    assert len(sr_row) == 1 and not sr_row[0].analysable


def test_a_pet_image_re_sent_with_other_content_still_reopens_a_settled_study(
    receiving_node: Callable[..., NodeProcess], node_db: Callable[[NodeProcess], NodeDatabase],
    small_study: StudyMaker, tmp_path: Path,
) -> None:
    node = receiving_node({"assembly": {"tick_seconds": 0.2, "settle_seconds": 0}})
    db = node_db(node)
    folder, truth = small_study(seed=22)
    files = sorted(folder.glob("*/*.dcm"))
    assert storescu(node.port, files).returncode == 0
    wait_for(lambda: [s for s in db.studies() if s.state == "queued"], timeout=60)
    pet = next(p for p in files if pydicom.dcmread(p, stop_before_pixels=True).Modality == "PT")
    revised = pydicom.dcmread(pet)
    revised.ImageComments = "corrected by the modality"
    revised.save_as(tmp_path / "revised.dcm")
    assert storescu(node.port, [tmp_path / "revised.dcm"]).returncode == 0
    reopened = wait_for(lambda: db.audit("study", "reopened"), timeout=30)
    assert "re-sent with different content" in (reopened[0].reason or "")  # type: ignore[index]
