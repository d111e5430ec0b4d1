"""Associations in several receiving processes: spread over them, limited over all of them, nothing
acknowledged lost when one is killed, and one SOP instance stored once when two processes get it at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread

from dicom_node.store.file_meta import content_digest
from tests.dicom_node.receive.clients import (
    DCMTK_ENV,
    NodeDatabase,
    RawPeer,
    acknowledged_before_a_kill,
    echoscu,
    parse_storescu,
    storescu,
    wait_for,
)
from tests.dicom_node.receive.dicom_files import write_series
from tests.support.node import NodeProcess

TWO_PROCESSES = {"node": {"receiving_processes": 2}}


def _receiving_pids(node: NodeProcess) -> list[int]:
    """The pids of every receiving process started so far, from their "receiving process serving" lines."""
    lines = Path(node.config["logging"]["file"]).read_text().splitlines()
    return [int(record["pid"]) for record in map(json.loads, lines)
            if record.get("event") == "receiving process serving"]


def _sockets(pid: int) -> int:
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if os.readlink(fd).startswith("socket:"))


def test_parallel_associations_are_spread_over_the_receiving_processes(
        receiving_node: Callable[..., NodeProcess]) -> None:
    node = receiving_node(TWO_PROCESSES)
    pids = _receiving_pids(node)
    assert len(pids) == 2  # both serve before the node listens
    idle = [_sockets(pid) for pid in pids]
    peers = [RawPeer(node.port) for _ in range(2)]
    try:
        assert [peer.associate("STORESCU") for peer in peers] == [2, 2]  # both accepted
        # Each process now holds one more connection (and its wake-up pair): one association each.
        assert all(_sockets(pid) > before for pid, before in zip(pids, idle, strict=True))
    finally:
        for peer in peers:
            peer.close()


def test_association_limits_hold_over_every_receiving_process(receiving_node, node_db) -> None:
    node = receiving_node({"node": {"receiving_processes": 2, "max_connections_per_host": 2}})
    peers: list[RawPeer] = []
    answers = []
    try:
        for _ in range(3):  # one after the other: the gate lets only two connect at once anyway
            peers.append(RawPeer(node.port, "127.0.0.9"))
            answers.append(peers[-1].associate("STORESCU"))
        # The first two land in different processes; the third is rejected all the same.
        assert answers == [2, 2, 3]
    finally:
        for peer in peers:
            peer.close()
    db = node_db(node)
    rejected = wait_for(lambda: [row.reason for row in db.audit("association", "rejected")])
    assert rejected == ["127.0.0.9 already holds 2 associations (max_connections_per_host 2)"]
    assert echoscu(node.port).returncode == 0  # the count goes down again as associations end


def test_killed_receiving_process_loses_nothing_acknowledged_and_is_replaced(
        tmp_path: Path, db_url: str, receiving_node) -> None:
    files = write_series(tmp_path / "pt", "PT", 200)
    node = receiving_node(TWO_PROCESSES, db_url=db_url)
    pids = _receiving_pids(node)

    def kill_receiving_processes() -> None:  # mid-association, whichever process holds it
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

    acknowledged = acknowledged_before_a_kill(node.port, files, kill_receiving_processes)

    # serve carries on: both processes come back, and the sender's re-send completes the series.
    node.wait_until(lambda: len(_receiving_pids(node)) == 4, timeout=30, what="both receiving processes restarted")
    db = NodeDatabase(node.config["database"]["url"])
    try:
        rows = {row.sop_instance_uid: row for row in db.instances()}
        for path in acknowledged:
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            assert uid in rows, f"acknowledged {path} lost"
            assert content_digest(Path(rows[uid].path).read_bytes()) == rows[uid].sha256
        resent = storescu(node.port, files)
        assert len(resent.succeeded) == len(files), resent.output
        rows = {row.sop_instance_uid: row for row in db.instances()}
        assert len(rows) == len(files) and all(row.revision == 1 for row in rows.values())
        assert db.studies()[0].instance_count == len(files)
    finally:
        db.close()


def test_one_instance_on_two_processes_at_once_is_stored_once(tmp_path: Path, db_url: str, receiving_node,
                                                             node_db) -> None:
    files = write_series(tmp_path / "pt", "PT", 40)
    node = receiving_node(TWO_PROCESSES, db_url=db_url)
    senders = [subprocess.Popen(["storescu", "-v", "-aec", "PSMA_NODE", "127.0.0.1", str(node.port),
                                 *map(str, files)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=DCMTK_ENV) for _ in range(2)]
    outputs = [sender.communicate(timeout=120)[0] for sender in senders]
    for output in outputs:
        assert sorted(parse_storescu(output).values()) == ["Success"] * len(files), output
    db = node_db(node)
    rows = db.instances()
    assert len(rows) == len(files) and {row.revision for row in rows} == {1}
    assert all(content_digest(Path(row.path).read_bytes()) == row.sha256 for row in rows)
    assert db.studies()[0].instance_count == len(files)
