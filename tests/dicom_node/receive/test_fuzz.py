"""Fuzzing through a real association: mutated real and synthetic files never crash or stall the node, and
every success status it sends is backed by a stored file and a row."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import data_element_generator, read_dataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import generate_uid
from pynetdicom.dsutils import encode
from sqlalchemy import select

from db.models import AuditEvent, Instance
from tests.dicom_node.receive.clients import NodeDatabase, dcmtk_unreadable, pynetdicom_echo, send_raw_files
from tests.dicom_node.receive.dicom_files import image
from tests.support.node import SHARED_DATA, NodeProcess, write_config

REFUSALS = {0xA900, 0xC000, 0xC001, 0xC002}  # 0x0110 would mean an unexpected error in the node
# Elements whose values get corrupted: identity, geometry, sizes, a sequence, free text.
CORRUPTED = [(0x0020, 0x000D), (0x0020, 0x000E), (0x0008, 0x0018), (0x0020, 0x0013), (0x0020, 0x0032),
             (0x0020, 0x0037), (0x0028, 0x0010), (0x0028, 0x0030), (0x0054, 0x0016), (0x0008, 0x103E),
             (0x0008, 0x0005), (0x7FE0, 0x0010)]


def _bases() -> list[bytes]:
    """Encoded datasets to mutate: small synthetic PET and CT slices and two real PET slices."""
    datasets = [image("PT", generate_uid(), generate_uid(), 0, size=16),
                image("CT", generate_uid(), generate_uid(), 1, size=16)]
    for path in (SHARED_DATA / "real-pet-slices" / "1.dcm",
                 SHARED_DATA / "real-pet-ge-sts001" / "PT" / "1-001.dcm"):
        if path.exists():
            datasets.append(dcmread(path))
    return [_explicit(ds) for ds in datasets]


def _explicit(ds: Dataset) -> bytes:
    return encode(ds, False, True)


BASES = _bases()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    config = write_config(tmp_path_factory.mktemp("fuzz"), {"workers": {"count": 0}})
    process = NodeProcess(config).start()
    yield process
    process.stop()


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(SOP class, fresh SOP instance UID, mutated explicit-VR-little-endian dataset bytes)."""
    ds = read_dataset(BytesIO(draw(st.sampled_from(BASES))), False, True)
    uid = f"2.25.1{uuid.uuid4().int % 10**37:037d}"  # fresh, and always as long (replays stay aligned)
    ds.SOPInstanceUID = uid
    body = bytearray(_explicit(ds))
    kind = draw(st.sampled_from(["bit-flips", "truncation", "value-corruption", "value-resize"]))
    if kind == "bit-flips":
        for position in draw(st.lists(st.integers(0, len(body) - 1), min_size=1, max_size=8)):
            body[position] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncation":
        body = body[:draw(st.integers(0, len(body) - 1))]
    else:
        spans = _value_spans(bytes(body))
        start, length = spans[draw(st.sampled_from([t for t in CORRUPTED if t in spans]))]
        if kind == "value-corruption":  # same length, random content
            body[start:start + length] = draw(st.binary(min_size=length, max_size=length))
        else:  # different length than the element declares: everything after it shifts
            replacement = st.binary(max_size=length + 16).filter(lambda b: len(b) != length)
            body[start:start + length] = draw(replacement)
    return str(ds.SOPClassUID), uid, bytes(body)


def _value_spans(body: bytes) -> dict[tuple[int, int], tuple[int, int]]:
    """Offset and length of each top-level value in explicit VR little endian bytes (sequences read
    with undefined length come back parsed, without an offset, and are left out)."""
    spans = {}
    for element in data_element_generator(BytesIO(body), False, True):
        if isinstance(element, RawDataElement) and element.value_tell is not None:
            spans[(element.tag.group, element.tag.element)] = (element.value_tell, len(element.value or b""))
    return spans


def _write(path: Path, sop_class: str, uid: str, body: bytes) -> None:
    """Intact file meta (the client needs it), mutated dataset."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    with path.open("wb") as fp:
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)
        fp.write(body)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(case=mutated())
def test_mutated_files_never_crash_and_success_means_stored(tmp_path_factory: pytest.TempPathFactory,
                                                           node: NodeProcess, db: NodeDatabase,
                                                           case: tuple[str, str, bytes]) -> None:
    sop_class, uid, body = case
    path = tmp_path_factory.mktemp("case") / "mutated.dcm"
    _write(path, sop_class, uid, body)
    (status,) = send_raw_files(node.port, [path])
    assert status is not None, "no response: the node stalled or aborted"
    with db.engine.connect() as connection:
        rows = connection.execute(select(Instance).where(Instance.sop_instance_uid == uid)).all()
        refusals = connection.execute(select(AuditEvent).where(
            AuditEvent.sop_instance_uid == uid, AuditEvent.action == "refused")).all()
    if status == 0:
        (row,) = rows
        stored = Path(row.path).read_bytes()
        assert stored.endswith(body) and hashlib.sha256(body).hexdigest() == row.sha256
    else:
        assert status in REFUSALS, f"unexpected status 0x{status:04X}"
        assert rows == [] and len(refusals) == 1 and refusals[0].reason


def test_node_still_answers_after_fuzzing(node: NodeProcess, db: NodeDatabase) -> None:
    assert pynetdicom_echo(node.port)
    assert "cannot store instance" not in Path(node.config["logging"]["file"]).read_text()


def test_every_acknowledged_mutation_is_readable_by_dcmtk(node: NodeProcess) -> None:
    """What pydicom tolerated and the node acknowledged, dcmtk can read too (an answered Success promises a
    usable file, not just a stored one)."""
    stored = sorted(Path(node.config["storage"]["directory"]).rglob("*.dcm"))
    assert dcmtk_unreadable(stored) == []
