"""Real DICOM clients for the receiving tests: dcmtk storescu/echoscu and pynetdicom, plus DB checks."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from io import BytesIO
from dataclasses import dataclass
from pathlib import Path

from pydicom.filereader import read_file_meta_info
from pynetdicom import AE, _config
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine

from db.models import AuditEvent, Instance, Study

DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}
_SENDING = re.compile(r"Sending file: (.+)$")
_RESPONSE = re.compile(r"Received Store Response \((.+?)\)")


@dataclass
class StoreRun:
    returncode: int
    output: str
    statuses: dict[str, str]  # file sent -> storescu's status text ("Success", "Error: ..." ...)

    @property
    def succeeded(self) -> list[str]:
        return [path for path, status in self.statuses.items() if status == "Success"]


def parse_storescu(output: str) -> dict[str, str]:
    """File -> response status, from `storescu -v` output (a file without a response is absent)."""
    statuses: dict[str, str] = {}
    current: str | None = None
    for line in output.splitlines():
        sending = _SENDING.search(line)
        if sending:
            current = sending.group(1).strip()
            continue
        response = _RESPONSE.search(line)
        if response and current is not None:
            statuses[current] = response.group(1)
            current = None
    return statuses


def storescu(port: int, files: list[Path], *args: str, called: str = "PSMA_NODE", calling: str = "STORESCU",
             timeout: float = 60) -> StoreRun:
    command = ["storescu", "-v", "-aec", called, "-aet", calling, *args, "127.0.0.1", str(port),
               *map(str, files)]
    result = subprocess.run(command, capture_output=True, text=True, env=DCMTK_ENV, timeout=timeout)
    output = result.stdout + result.stderr
    return StoreRun(result.returncode, output, parse_storescu(output))


def echoscu(port: int, *args: str, called: str = "PSMA_NODE",
            calling: str = "ECHOSCU") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["echoscu", "-v", "-aec", called, "-aet", calling, *args, "127.0.0.1", str(port)],
                          capture_output=True, text=True, env=DCMTK_ENV, timeout=30)


def pynetdicom_echo(port: int, calling: str = "ECHOSCU", bind_address: tuple[str, int] | None = None) -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="PSMA_NODE", bind_address=bind_address or ("", 0))
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


@contextmanager
def _raw_file_sending() -> Iterator[None]:
    """pynetdicom then sends a file's bytes after the file meta as they are, without decoding them."""
    previous = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        yield
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = previous


def send_raw_files(port: int, files: list[Path], calling: str = "RAWSCU",
                   bind_address: tuple[str, int] | None = None) -> list[int | None]:
    """C-STORE each file's dataset bytes unchanged (even corrupt ones), one association; statuses in order.

    The request's SOP Class/Instance UIDs and the context come from each file's meta information.
    """
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    for pair in sorted({(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID))
                        for m in map(read_file_meta_info, files)}):
        ae.add_requested_context(pair[0], [pair[1]])
    assoc = ae.associate("127.0.0.1", port, ae_title="PSMA_NODE", bind_address=bind_address or ("", 0))
    assert assoc.is_established, "association not accepted"
    statuses: list[int | None] = []
    with _raw_file_sending():
        for path in files:
            status = assoc.send_c_store(path)
            statuses.append(int(status.Status) if "Status" in status else None)
    assoc.release()
    return statuses


def send_on_context(port: int, dataset_bytes: bytes, request_class: str, context_class: str,
                    sop_instance_uid: str, transfer_syntax: str = "1.2.840.10008.1.2.1") -> int:
    """A C-STORE whose Affected SOP Class UID differs from its presentation context's abstract syntax.

    No well-behaved client does this, so the request is put on the wire with pynetdicom's DIMSE layer.
    """
    ae = AE(ae_title="RAWSCU")
    ae.dimse_timeout = 20
    ae.add_requested_context(context_class, [transfer_syntax])
    assoc = ae.associate("127.0.0.1", port, ae_title="PSMA_NODE")
    assert assoc.is_established
    context_id = assoc.accepted_contexts[0].context_id
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = request_class
    request.AffectedSOPInstanceUID = sop_instance_uid
    request.Priority = 2
    request.DataSet = BytesIO(dataset_bytes)
    assoc._reactor_checkpoint.clear()  # what send_c_store does: pause the reactor, then talk DIMSE
    while not assoc._is_paused:
        time.sleep(0.0001)
    assoc.dimse.send_msg(request, context_id)
    _, response = assoc.dimse.get_msg(block=True)
    assoc._reactor_checkpoint.set()
    assoc.release()
    return int(response.Status)


def wait_for(condition: Callable[[], object], timeout: float = 10.0) -> object:
    """Poll until `condition()` is truthy (audit rows written after the peer already saw the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


class NodeDatabase:
    """Read-only view of a node's database for assertions."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = create_engine(url)

    def instances(self) -> list[Instance]:
        with self.engine.connect() as connection:
            return list(connection.execute(select(Instance).order_by(Instance.id)).all())

    def instance_uids(self) -> set[str]:
        with self.engine.connect() as connection:
            return set(connection.execute(select(Instance.sop_instance_uid)).scalars())

    def studies(self) -> list[Study]:
        with self.engine.connect() as connection:
            return list(connection.execute(select(Study)).all())

    def audit(self, category: str | None = None, action: str | None = None) -> list[AuditEvent]:
        query = select(AuditEvent).order_by(AuditEvent.id)
        if category:
            query = query.where(AuditEvent.category == category)
        if action:
            query = query.where(AuditEvent.action == action)
        with self.engine.connect() as connection:
            return list(connection.execute(query).all())

    def scalar(self, sql: str) -> object:
        with self.engine.connect() as connection:
            return connection.execute(text(sql)).scalar()

    def close(self) -> None:
        self.engine.dispose()
