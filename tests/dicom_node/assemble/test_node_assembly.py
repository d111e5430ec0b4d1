"""A real node (`psma-node serve`) fed by dcmtk storescu: completeness, rejection, reopening, crash recovery.

Small synthetic studies keep each analysis to a few seconds; quiet periods are shortened in the node's
config so that the fallback rules fire within the test.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Job, Result, Study, WorkerHeartbeat
from db.session import make_engine, make_session_factory
from dicom_node.synth import GroundTruth, SynthOptions, generate_study
from tests.support.node import NodeProcess
from tests.support.tools import require_tool

pytestmark = pytest.mark.slow
QUICK = {"assembly": {"quiet_seconds": 3, "ceiling_seconds": 120}, "workers": {"lease_seconds": 10}}


def synth(folder: Path, seed: int, **options: Any) -> tuple[GroundTruth, list[Path], list[Path]]:
    truth = generate_study(
        folder, SynthOptions(ct_matrix=96, pet_matrix=48, extent_mm=150, seed=seed, **options)
    )
    return truth, sorted((folder / "PT").glob("*.dcm")), sorted((folder / "CT").glob("*.dcm"))


def send(node: NodeProcess, files: Sequence[Path]) -> None:
    storescu = require_tool("storescu")
    done = subprocess.run(
        [storescu, "-aec", "PSMA_NODE", "-aet", "STORESCU", "127.0.0.1", str(node.port), *map(str, files)],
        env={**os.environ, "TCP_NODELAY": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def database(node: NodeProcess) -> sessionmaker[Session]:
    return make_session_factory(make_engine(node.config["database"]["url"]))


def study_state(sessions: sessionmaker[Session], study_uid: str) -> str | None:
    with sessions() as session:
        return session.scalar(select(Study.state).where(Study.study_uid == study_uid))


def state_is(sessions: sessionmaker[Session], study_uid: str, *states: str) -> Callable[[], bool]:
    return lambda: study_state(sessions, study_uid) in states


def story(
    sessions: sessionmaker[Session], study_uid: str
) -> tuple[Study, list[Job], list[Result], list[AuditEvent]]:
    with sessions() as session:
        study = session.scalars(select(Study).where(Study.study_uid == study_uid)).one()
        jobs = list(session.scalars(select(Job).where(Job.study_id == study.id).order_by(Job.id)))
        results = list(session.scalars(select(Result).where(Result.study_id == study.id).order_by(Result.id)))
        events = list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.study_uid == study_uid).order_by(AuditEvent.id)
            )
        )
        return study, jobs, results, events


def transitions(events: list[AuditEvent]) -> list[str]:
    return [e.action for e in events if e.category == "study" and "to_state" in e.detail]


def test_shuffled_interleaved_studies_are_each_analysed_once(node_factory: Any, tmp_path: Path) -> None:
    first, pet1, ct1 = synth(tmp_path / "s1", seed=11)
    second, pet2, ct2 = synth(tmp_path / "s2", seed=12, recurrence=False)
    files = pet1 + ct1 + pet2 + ct2
    random.Random(5).shuffle(files)
    node = node_factory(QUICK)
    send(node, files)
    sessions = database(node)
    for truth in (first, second):
        node.wait_until(state_is(sessions, truth.study_uid, "done", "failed"), 90, "analysis")
    time.sleep(1.5)  # a few more ticks: nothing may be analysed twice
    for truth in (first, second):
        study, jobs, results, events = story(sessions, truth.study_uid)
        assert study.state == "done", study.state_reason
        assert study.pet_series_uid == truth.pet_series_uid and study.ct_series_uid == truth.ct_series_uid
        assert len(jobs) == 1 and jobs[0].state == "done" and jobs[0].attempts == 1
        assert len(results) == 1
        assert transitions(events) == ["complete", "queued", "running", "done"]
        complete = next(e for e in events if e.action == "complete")
        assert complete.detail["rule"] == "content-proof"
        done = next(e for e in events if e.category == "job" and e.action == "done")
        assert (
            done.detail["worker_id"] and done.detail["device"] == "cpu" and "read" in done.detail["timings"]
        )
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "dicom_node.cli.main",
            "--config",
            str(node.config_path),
            "studies",
            "show",
            first.accession_number,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "[content-proof]" in shown.stdout and "state done" in shown.stdout


def test_incomplete_ct_only_fdg_and_unanalysable_studies_end_with_reasons(
    node_factory: Any, tmp_path: Path, shared_data: Path
) -> None:
    gapped, pet, ct = synth(tmp_path / "gap", seed=21)
    ct_only, _, ct_files = synth(tmp_path / "ct", seed=22)
    weightless, bad_pet, bad_ct = synth(tmp_path / "weight", seed=23)
    for path in bad_pet:
        dataset = pydicom.dcmread(path)
        del dataset.PatientWeight
        dataset.save_as(path)
    fdg = sorted((shared_data / "real-pet-ge-sts001").rglob("*.dcm"))
    fdg_uid = pydicom.dcmread(fdg[0], stop_before_pixels=True).StudyInstanceUID
    node = node_factory(QUICK)
    sessions = database(node)
    send(node, fdg + ct_files + bad_pet + bad_ct)
    send(node, [p for n, p in enumerate(pet) if n != 17] + ct)
    assert study_state(sessions, gapped.study_uid) == "receiving"  # waits for the quiet period
    for uid in (gapped.study_uid, ct_only.study_uid, fdg_uid, weightless.study_uid):
        node.wait_until(state_is(sessions, uid, "rejected", "done", "failed"), 30, "a verdict")
    study, jobs, results, events = story(sessions, weightless.study_uid)
    assert study.state == "failed" and "PatientWeight (0010,1030) is missing" in (study.state_reason or "")
    assert [j.state for j in jobs] == ["failed"] and results == []
    assert (
        next(e for e in events if e.action == "failed" and e.category == "study").detail["rule"]
        == "analysis-error"
    )
    expected = {
        gapped.study_uid: ("PET: 1 of 38 slices missing", "quiet-period"),
        ct_only.study_uid: ("no PET series in the study", "selection after quiet-period"),
        fdg_uid: ("tracer is FDG, not PSMA", "selection"),
    }
    for uid, (reason, rule) in expected.items():
        study, jobs, _, events = story(sessions, uid)
        assert study.state == "rejected" and reason in (study.state_reason or ""), study.state_reason
        assert jobs == []
        rejected = [e for e in events if e.action == "rejected"]
        assert len(rejected) == 1 and rejected[0].detail["rule"] == rule


def _split_top_ct(ct: list[Path], count: int) -> tuple[list[Path], list[Path]]:
    by_z = sorted(
        ct, key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).ImagePositionPatient[2])
    )
    return by_z[:-count], by_z[-count:]


def test_late_instances_reopen_the_study_and_the_new_result_supersedes(
    node_factory: Any, tmp_path: Path
) -> None:
    truth, pet, ct = synth(tmp_path / "late", seed=31)
    early, late = _split_top_ct(ct, 4)
    node = node_factory(QUICK)
    sessions = database(node)
    send(node, pet + early)
    node.wait_until(state_is(sessions, truth.study_uid, "done"), 60, "first analysis")
    study, jobs, results, events = story(sessions, truth.study_uid)
    assert next(e for e in events if e.action == "complete").detail["rule"] == "quiet-period"
    send(node, late)
    node.wait_until(
        lambda: (
            len(story(sessions, truth.study_uid)[2]) == 2 and study_state(sessions, truth.study_uid) == "done"
        ),
        60,
        "second analysis",
    )
    study, jobs, results, events = story(sessions, truth.study_uid)
    assert study.generation == 2
    assert [(j.generation, j.state) for j in jobs] == [(1, "done"), (2, "done")]
    assert results[0].superseded_by_id == results[1].id and results[1].superseded_by_id is None
    reopened = next(e for e in events if e.action == "reopened")
    assert reopened.detail["rule"] == "new-data"
    assert "new instance(s) after the study was done" in (reopened.reason or "")
    assert [e.detail["rule"] for e in events if e.action == "complete"] == ["quiet-period", "content-proof"]


def test_killed_worker_and_stopped_node_leave_the_job_to_be_finished_once(
    node_factory: Any, tmp_path: Path
) -> None:
    """Worker SIGKILLed mid-job: re-queued at once (attempt counted). Node SIGTERMed mid-job: the worker
    releases the job (attempt not counted) and the next node finishes it. One result in the end."""
    truth, pet, ct = synth(tmp_path / "kill", seed=41)
    node = node_factory(QUICK)
    sessions = database(node)
    send(node, pet + ct)

    def running_worker_pid() -> int | None:
        with sessions() as session:
            job = session.scalars(select(Job).where(Job.state == "running")).first()
            if job is None or job.worker_id is None:
                return None
            return session.scalar(select(WorkerHeartbeat.pid).where(WorkerHeartbeat.id == job.worker_id))

    killed = node.wait_until(running_worker_pid, 60, "the job to run")
    os.kill(killed, signal.SIGKILL)
    node.wait_until(lambda: (running_worker_pid() or killed) != killed, 60, "the job to run again")
    node.stop()
    study, jobs, results, events = story(sessions, truth.study_uid)
    if study.state != "done":  # the stop may have come too late to interrupt the second run
        assert study.state == "queued" and jobs[0].state == "queued" and jobs[0].attempts == 1
        assert [e.detail["rule"] for e in events if e.action == "requeued"] == [
            "worker-died",
            "worker-stopped",
        ]
        again = node_factory(QUICK, db_url=node.config["database"]["url"], name="again")
        again.wait_until(state_is(sessions, truth.study_uid, "done", "failed"), 60, "the released job")
        study, jobs, results, events = story(sessions, truth.study_uid)
    assert study.state == "done"
    assert len(jobs) == 1 and jobs[0].attempts == 2 and jobs[0].state == "done"
    assert len(results) == 1
    assert [e.detail["rule"] for e in events if e.action == "requeued"][0] == "worker-died"
    assert [e.action for e in events if e.category == "job" and e.action == "done"] == ["done"]


def test_queued_work_survives_a_node_crash_and_a_separate_worker_runs_it(
    node_factory: Any, tmp_path: Path, db_url: str
) -> None:
    """Node killed with a queued job; after restart, `psma-node worker` (as on another machine) runs it."""
    truth, pet, ct = synth(tmp_path / "restart", seed=51)
    receive_only = {**QUICK, "workers": {"count": 0}}
    first = node_factory(receive_only, db_url=db_url, name="first")
    sessions = database(first)
    send(first, pet + ct)
    first.wait_until(state_is(sessions, truth.study_uid, "queued"), 30, "the study to be queued")
    first.kill()
    again = node_factory({**receive_only, "storage": first.config["storage"]}, db_url=db_url, name="second")
    log = open(tmp_path / "worker.log", "wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "dicom_node.cli.main", "--config", str(again.config_path), "worker"],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        again.wait_until(state_is(sessions, truth.study_uid, "done", "failed"), 60, "the resumed job")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(10)
        log.close()
    study, jobs, results, _ = story(sessions, truth.study_uid)
    assert study.state == "done" and len(jobs) == 1 and jobs[0].attempts == 1 and len(results) == 1
    with sessions() as session:
        assert session.scalars(select(WorkerHeartbeat)).all() == []  # a stopped worker signs off
