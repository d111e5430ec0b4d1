"""Wake-ups between processes: rung on commit (never before, never on rollback), across processes, on SQLite
(named pipes) and PostgreSQL (LISTEN/NOTIFY); loops run their work when woken, and polling still works."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from db.session import make_engine, make_session_factory, transaction, upgrade
from dicom_node.wake import JOBS, OUTBOX, PipeWaiter, WakeLoop, listen, pipe_folder, ring_on_commit
from tests.support.wait import wait_for

WAIT_S = 30.0  # generous: a wake-up that works returns long before; a broken one times out


def test_ring_wakes_a_waiter_only_when_the_transaction_commits(
    db_url: str, sessions: sessionmaker[Session]
) -> None:
    waiter = listen(db_url, JOBS)
    try:
        session = sessions()
        session.execute(text("SELECT 1"))
        ring_on_commit(session, JOBS)
        assert waiter.wait(0.3) is False, "woken before the commit"
        session.commit()
        session.close()
        started = time.monotonic()
        assert waiter.wait(WAIT_S) is True
        assert time.monotonic() - started < WAIT_S / 2
        assert waiter.wait(0.2) is False, "one ring wakes once"
    finally:
        waiter.close()


def test_rolled_back_transaction_does_not_ring(db_url: str, sessions: sessionmaker[Session]) -> None:
    waiter = listen(db_url, OUTBOX)
    try:
        with pytest.raises(RuntimeError):
            with transaction(sessions) as session:
                ring_on_commit(session, OUTBOX)
                raise RuntimeError("analysis failed")
        assert waiter.wait(0.3) is False
    finally:
        waiter.close()


def test_other_channels_are_not_woken(db_url: str, sessions: sessionmaker[Session]) -> None:
    jobs, outbox = listen(db_url, JOBS), listen(db_url, OUTBOX)
    try:
        with transaction(sessions) as session:
            ring_on_commit(session, OUTBOX)
        assert outbox.wait(WAIT_S) is True
        assert jobs.wait(0.3) is False
    finally:
        jobs.close()
        outbox.close()


CHILD = """
import sys, time
from dicom_node.wake import listen
waiter = listen(sys.argv[1], "jobs")
print("ready", flush=True)
started = time.monotonic()
woken = waiter.wait(float(sys.argv[2]))
print(f"{woken} {time.monotonic() - started:.3f}", flush=True)
waiter.close()
"""


def test_a_commit_in_one_process_wakes_a_waiter_in_another(
    db_url: str, sessions: sessionmaker[Session]
) -> None:
    child = subprocess.Popen([sys.executable, "-c", CHILD, db_url, str(WAIT_S)], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        with transaction(sessions) as session:
            ring_on_commit(session, JOBS)
        woken, seconds = child.stdout.readline().split()
        assert woken == "True" and float(seconds) < WAIT_S / 2
    finally:
        child.kill()
        child.wait()


def test_the_pipe_of_a_process_that_died_is_removed_when_rung(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    upgrade(url)
    folder = pipe_folder(url)
    assert folder is not None
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, "60"], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    child.kill()
    child.wait()
    assert [p.name for p in folder.iterdir() if p.name.startswith("jobs.")], "the child's pipe is there"
    with transaction(make_session_factory(make_engine(url))) as session:
        ring_on_commit(session, JOBS)
    assert not [p for p in folder.iterdir() if p.name.startswith("jobs.")]


def test_interrupt_wakes_a_waiter_and_close_removes_its_pipe(tmp_path: Path) -> None:
    waiter = PipeWaiter(tmp_path / "wake", JOBS)
    threading.Timer(0.2, waiter.interrupt).start()
    assert waiter.wait(WAIT_S) is True
    waiter.close()
    waiter.interrupt()  # late interrupts after close are harmless
    assert list((tmp_path / "wake").iterdir()) == []


def test_wake_loop_runs_work_when_woken_and_again_for_a_wake_during_work() -> None:
    runs: list[float] = []
    first_run_started = threading.Event()
    release_first_run = threading.Event()
    second_run = threading.Event()

    def work() -> None:
        runs.append(time.monotonic())
        if len(runs) == 2:
            first_run_started.set()
            release_first_run.wait(WAIT_S)
        if len(runs) == 3:
            second_run.set()

    loop = WakeLoop("test", work, interval=3600.0)
    loop.start()
    try:
        wait_for(lambda: runs, timeout=WAIT_S, what="the loop's first run at start", interval=0.01)
        loop.wake()
        assert first_run_started.wait(WAIT_S)
        loop.wake()  # while work runs: must not be lost
        release_first_run.set()
        assert second_run.wait(WAIT_S)
    finally:
        loop.stop()
    assert not loop.is_alive()


def test_wake_loop_still_polls_without_wake_ups() -> None:
    polled = threading.Event()
    count = 0

    def work() -> None:
        nonlocal count
        count += 1
        if count == 3:
            polled.set()

    loop = WakeLoop("poll", work, interval=0.05)
    loop.start()
    try:
        assert polled.wait(WAIT_S)
    finally:
        loop.stop()


def test_in_memory_database_wakes_within_the_process_only() -> None:
    waiter = listen("sqlite://", JOBS)
    try:
        threading.Timer(0.1, waiter.interrupt).start()
        assert waiter.wait(WAIT_S) is True
    finally:
        waiter.close()


def test_a_folder_without_named_pipes_falls_back_to_polling(tmp_path: Path) -> None:
    database = tmp_path / "node.db"
    (tmp_path / "node.db.wake").write_text("a file where the pipe folder should be")
    waiter = listen(f"sqlite:///{database}", JOBS)
    try:
        assert waiter.wait(0.05) is False  # polls: times out, never raises
    finally:
        waiter.close()
