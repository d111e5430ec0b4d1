"""Wake-ups between the node's parts: a queued job wakes an idle worker, a published result wakes the sender.

The database stays the truth and polling the fallback: a wake-up only says "look now", so a lost one costs
one poll interval, never a job or a result. Channels are rung when the transaction that made the change
commits, so whoever wakes finds the change.

- PostgreSQL: NOTIFY inside that transaction (delivered on commit) and LISTEN on a dedicated connection;
  this reaches workers on other machines sharing the database.
- SQLite (one machine): one named pipe per waiting process in a folder next to the database file; ringing
  writes a byte into each pipe of the channel. A pipe whose process died has no reader and is removed.
- In one process: `WakeLoop.wake()` (the receiver waking assembly).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import select
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, create_engine, event, make_url, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

JOBS = "jobs"
"""Rung when a job is queued or re-queued; workers wait on it."""
OUTBOX = "outbox"
"""Rung when result objects are put in the outbox (or retried); the sender waits on it."""

_CHANNEL = re.compile(r"^[a-z][a-z0-9_]*$")
_PENDING = "psma_wake_channels"
_PG_PREFIX = "psma_node_"


class Waiter(Protocol):
    def wait(self, timeout: float) -> bool:
        """Block until rung, interrupted, or `timeout` seconds passed; True if rung or interrupted."""

    def interrupt(self) -> None:
        """Make the current or next `wait` return now (safe from a signal handler)."""

    def close(self) -> None: ...


def _check(channel: str) -> str:
    if not _CHANNEL.match(channel):
        raise ValueError(f"bad wake channel name {channel!r}")
    return channel


def pipe_folder(url: URL | str) -> Path | None:
    """Where an SQLite database's processes keep their wake pipes; None for PostgreSQL or in-memory."""
    url = make_url(url) if isinstance(url, str) else url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    database = Path(url.database).resolve()
    return database.with_name(database.name + ".wake")


def _ring_pipes(folder: Path, channel: str) -> None:
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return  # nobody has waited yet
    for entry in entries:
        if not entry.name.startswith(channel + "."):
            continue
        try:
            fd = os.open(entry.path, os.O_WRONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader: its process is gone
                try:
                    os.unlink(entry.path)
                except FileNotFoundError:
                    pass
            continue
        try:
            os.write(fd, b"\x01")
        except BlockingIOError:
            pass  # pipe full: rung already
        finally:
            os.close(fd)


def _ring_after_commit(session: Session) -> None:
    """Runs inside `commit()` after the commit succeeded: it must never raise (the caller would take its
    committed work for failed); a missed wake-up only costs the waiters one poll interval."""
    channels = session.info.pop(_PENDING, set())
    try:
        folder = pipe_folder(session.get_bind().engine.url)
        for channel in channels if folder is not None else ():
            _ring_pipes(folder, channel)
    except Exception:
        log.exception("wake-up not delivered; the waiters poll", extra={"channels": sorted(channels)})


def ring_on_commit(session: Session, channel: str) -> None:
    """Wake the processes waiting on `channel` when this session's transaction commits."""
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": _PG_PREFIX + _check(channel)})
        return
    pending: set[str] = session.info.setdefault(_PENDING, set())
    if not pending:
        event.listen(session, "after_commit", _ring_after_commit, once=True)
    pending.add(_check(channel))


def _poke(fd: int) -> None:
    """One byte into our own pipe; a full pipe is woken already. Closed waiters mark their fds -1, so a
    late interrupt cannot write into a descriptor number reused by something else."""
    if fd < 0:
        return
    try:
        os.write(fd, b"\x00")
    except OSError:
        pass


def _close(*fds: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


class EventWaiter:
    """In one process only."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wait(self, timeout: float) -> bool:
        woken = self._event.wait(timeout)
        self._event.clear()
        return woken

    def interrupt(self) -> None:
        self._event.set()

    def close(self) -> None:
        self._event.set()


class PipeWaiter:
    """A named pipe of this process in the database's wake folder; it also holds a writer on its own pipe,
    for `interrupt` and so that the pipe never reads end-of-file."""

    def __init__(self, folder: Path, channel: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"{_check(channel)}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        os.mkfifo(self.path, 0o600)
        self._read = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._write = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)

    def wait(self, timeout: float) -> bool:
        try:
            ready, _, _ = select.select([self._read], [], [], max(0.0, timeout))
        except (OSError, ValueError):  # closed meanwhile
            return True
        if not ready:
            return False
        try:
            while os.read(self._read, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        return True

    def interrupt(self) -> None:
        _poke(self._write)

    def close(self) -> None:
        fds, self._read, self._write = (self._read, self._write), -1, -1
        _close(*fds)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class PostgresWaiter:
    """LISTEN on a connection of its own; if it breaks, waits fall back to plain timeouts until it
    reconnects."""

    def __init__(self, url: str, channel: str) -> None:
        self._engine: Engine = create_engine(url, poolclass=NullPool)
        self._channel = _PG_PREFIX + _check(channel)
        self._connection: Any = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._connect()

    def _connect(self) -> None:
        try:
            raw = self._engine.raw_connection()
            connection = raw.driver_connection
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(f"LISTEN {self._channel}")
            self._connection = raw
        except Exception as exc:  # the database may be down; polling carries on
            log.warning("cannot LISTEN for wake-ups; polling",
                        extra={"channel": self._channel, "error": str(exc)})
            self._connection = None

    def wait(self, timeout: float) -> bool:
        if self._connection is None:
            self._connect()
        sources: list[Any] = [self._wake_read]
        if self._connection is not None:
            sources.append(self._connection.driver_connection)
        try:
            ready, _, _ = select.select(sources, [], [], max(0.0, timeout))
        except (OSError, ValueError):
            return True
        woken = False
        if self._wake_read in ready:
            try:
                while os.read(self._wake_read, 4096):
                    pass
            except (BlockingIOError, OSError):
                pass
            woken = True
        connection = self._connection.driver_connection if self._connection is not None else None
        if connection is not None and connection in ready:
            try:
                connection.poll()
                woken = woken or bool(connection.notifies)
                connection.notifies.clear()
            except Exception as exc:
                log.warning("wake-up connection lost; polling",
                            extra={"channel": self._channel, "error": str(exc)})
                self._drop()
                woken = True  # look once now: something may have been missed
        return woken

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.invalidate()
            except Exception:
                pass
        self._connection = None

    def interrupt(self) -> None:
        _poke(self._wake_write)

    def close(self) -> None:
        self._drop()
        self._engine.dispose()
        fds, self._wake_read, self._wake_write = (self._wake_read, self._wake_write), -1, -1
        _close(*fds)


def listen(url: str, channel: str) -> Waiter:
    """A waiter for `channel` on the database at `url` (in-memory SQLite: this process only)."""
    if make_url(url).get_backend_name() == "postgresql":
        return PostgresWaiter(url, channel)
    folder = pipe_folder(url)
    if folder is None:
        return EventWaiter()
    try:
        return PipeWaiter(folder, channel)
    except OSError as exc:  # e.g. a file system without named pipes: poll only
        log.warning("cannot create a wake-up pipe; polling", extra={"folder": str(folder), "error": str(exc)})
        return EventWaiter()


class WakeLoop(threading.Thread):
    """Runs `work` at once, then whenever woken, and at the latest every `interval` seconds.

    A wake-up arriving while `work` runs makes it run again right after, so none is lost.
    """

    def __init__(
        self, name: str, work: Callable[[], None], interval: float, waiter: Waiter | None = None
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.work = work
        self.interval = interval
        self.waiter: Waiter = waiter or EventWaiter()
        self._stopping = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self.work()
                except Exception:  # one failing round must not end the loop; the next round retries
                    log.exception("periodic work failed", extra={"loop": self.name})
                self.waiter.wait(self.interval)
        finally:
            self.waiter.close()

    def wake(self) -> None:
        self.waiter.interrupt()

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        self.waiter.interrupt()
        if self.is_alive():
            self.join(timeout)
