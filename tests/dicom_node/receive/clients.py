"""Real DICOM clients for the receiving tests: dcmtk storescu/echoscu and pynetdicom, plus DB checks."""

from __future__ import annotations

import os
import re
import socket
import struct
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
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
from pynetdicom.presentation import build_context
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


def acknowledged_before_a_kill(port: int, files: list[Path], kill: Callable[[], None],
                               after: int = 40) -> set[str]:
    """Send `files` with storescu, call `kill` once `after` instances are acknowledged (mid-association),
    and return the files the node acknowledged; fails if the kill did not land mid-transfer."""
    sender = subprocess.Popen(["storescu", "-v", "-aec", "PSMA_NODE", "127.0.0.1", str(port), *map(str, files)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=DCMTK_ENV)
    lines: list[str] = []
    assert sender.stdout is not None
    for line in sender.stdout:
        lines.append(line)
        if sum("Received Store Response (Success)" in seen for seen in lines) >= after:
            kill()
            break
    lines.extend(sender.stdout)
    sender.wait(30)
    acknowledged = {path for path, status in parse_storescu("".join(lines)).items() if status == "Success"}
    assert after <= len(acknowledged) < len(files), "the kill did not happen mid-transfer"
    return acknowledged


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


@contextmanager
def lenient_uids() -> Iterator[None]:
    """Let this process's pynetdicom put UIDs longer than 64 characters on the wire (a faulty sender)."""
    previous = _config.VALIDATORS["UI"]
    _config.VALIDATORS["UI"] = lambda value: (True, "")
    try:
        yield
    finally:
        _config.VALIDATORS["UI"] = previous


_DCMDUMP_FAILED = re.compile(r"reading file: (.+)$")


def dcmtk_unreadable(paths: list[Path]) -> list[str]:
    """The files among `paths` that dcmtk's dcmdump cannot read."""
    if not paths:
        return []
    result = subprocess.run(["dcmdump", *map(str, paths)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, timeout=120)
    return [match.group(1) for line in result.stderr.splitlines() if (match := _DCMDUMP_FAILED.search(line))]


def associate_request(calling: str, called: str = "PSMA_NODE") -> bytes:
    """The bytes of an A-ASSOCIATE-RQ proposing Verification and CT Image Storage (explicit VR LE)."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title, primitive.called_ae_title = calling, called
    contexts = [build_context(Verification), build_context("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1"])]
    for number, context in enumerate(contexts):
        context.context_id = 2 * number + 1
    primitive.presentation_context_definition_list = contexts
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.9.7156.1"
    primitive.user_information = [maximum, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


class RawPeer:
    """A TCP peer of the node that speaks (or fails to speak) DICOM byte by byte, from a chosen source
    address: loopback accepts any 127.0.0.0/8 source."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def associate(self, calling: str = "RAWPEER") -> int:
        """Send an A-ASSOCIATE-RQ; the type of the PDU answering it (2 accepted, 3 rejected)."""
        self.send(associate_request(calling))
        header = self._read(6)
        self._read(int.from_bytes(header[2:6], "big"))
        return header[0]

    def stall_mid_p_data(self) -> None:
        """Begin a P-DATA-TF PDU announcing 1000 bytes, send ten of them, and go quiet."""
        self.send(b"\x04\x00" + (1000).to_bytes(4, "big") + b"\x00" * 10)

    def closed_by_node(self, within: float) -> bool:
        """True once the node has closed (or reset) the connection, waiting at most `within` seconds."""
        self.sock.settimeout(within)
        try:
            while self.sock.recv(65536):
                pass
        except TimeoutError:
            return False
        except ConnectionResetError:
            pass
        return True

    def reset(self) -> None:
        """Abort with a TCP RST (SO_LINGER 0), as a crashing peer or a middlebox does."""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def close(self) -> None:
        self.sock.close()

    def _read(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError(f"closed after {len(data)} of {count} bytes")
            data += chunk
        return data


def process_threads(pid: int) -> int:
    """How many threads a process runs now (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError(f"no thread count for process {pid}")


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
