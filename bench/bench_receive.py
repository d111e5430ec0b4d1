"""Receiving throughput: the node against dcmtk storescp and a minimal pynetdicom SCP, same data, same client.

One synthetic study (512² CT x 300 + PET x 300, generated once into bench/out/) is sent by dcmtk storescu
(TCP_NODELAY=1) to (1) dcmtk storescp, (2) a pynetdicom SCP that only writes `event.encoded_dataset()`,
(3) the node (`psma-node serve`, SQLite, no workers, receiving processes as configured by default: one per
core) with one association and with four in parallel, and (4) the node with its associations in serve's own
threads (`receiving_processes: 0`, as with TLS). Prints instances/s, MB/s, ratios and the node's peak RSS
(serve and its receiving processes together).

    .venv/bin/python -m bench.bench_receive [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.node import NodeProcess, free_port, wait_for_port, write_config

OUT = Path(__file__).resolve().parent / "out" / "receive-study"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def study_files() -> list[Path]:
    """The benchmark study, generated on first use and reused afterwards."""
    if not (OUT / "ground_truth.json").exists():
        from dicom_node.synth import SynthOptions, generate_study

        print("generating the benchmark study (once) ...", flush=True)
        generate_study(OUT, SynthOptions(ct_matrix=512, pet_matrix=200, extent_mm=900.0,
                                         ct_slice_mm=3.0, pet_slice_mm=3.0))
    return sorted((OUT / "CT").glob("*.dcm")) + sorted((OUT / "PT").glob("*.dcm"))


@dataclass
class Run:
    seconds: float
    instances: int
    megabytes: float
    peak_rss_mb: float | None = None

    @property
    def per_second(self) -> float:
        return self.instances / self.seconds

    @property
    def mb_per_second(self) -> float:
        return self.megabytes / self.seconds


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class RssSampler:
    """Peak VmRSS of one process and its children together, sampled every 20 ms from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()
                total = _rss_kb(self.pid)
                for child in children:
                    try:
                        total += _rss_kb(int(child))
                    except OSError:
                        continue
                self.peak_kb = max(self.peak_kb, total)
            except OSError:
                return
            self._stop.wait(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def send(port: int, files: list[Path], associations: int, called: str) -> float:
    """storescu processes (one per association, files dealt round-robin); wall time until all finish."""
    parts = [files[i::associations] for i in range(associations)]
    started = time.perf_counter()
    senders = [subprocess.Popen(["storescu", "-aec", called, "127.0.0.1", str(port), *map(str, part)],
                                env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
               for part in parts]
    for sender in senders:
        _, errors = sender.communicate(timeout=600)
        if sender.returncode != 0:
            raise RuntimeError(f"storescu failed: {errors.decode(errors='replace')[-2000:]}")
    return time.perf_counter() - started


def run_storescp(files: list[Path], megabytes: float, work: Path) -> Run:
    port = free_port()
    target = work / "storescp"
    target.mkdir()
    server = subprocess.Popen(["storescp", "-aet", "STORESCP", "--output-directory", str(target), str(port)],
                              env=DCMTK_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port)
        seconds = send(port, files, 1, "STORESCP")
    finally:
        server.terminate()
        server.wait(10)
    return Run(seconds, len(files), megabytes)


MINIMAL_SCP = """
import socket, sys, uuid
from pathlib import Path
from pynetdicom import AE, evt, AllStoragePresentationContexts, _config
_config.LOG_HANDLER_LEVEL = "none"  # as in the node: no per-PDU log formatting in either receiver
target = Path(sys.argv[2])
def on_open(event):
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def on_store(event):
    (target / (event.request.AffectedSOPInstanceUID + ".dcm")).write_bytes(event.encoded_dataset())
    return 0
ae = AE("MINIMAL")
ae.supported_contexts = AllStoragePresentationContexts
ae.maximum_associations = 16
ae.start_server(("127.0.0.1", int(sys.argv[1])), evt_handlers=[(evt.EVT_CONN_OPEN, on_open),
                                                                (evt.EVT_C_STORE, on_store)])
"""


def run_minimal(files: list[Path], megabytes: float, work: Path, associations: int) -> Run:
    port = free_port()
    target = work / f"minimal-{associations}"
    target.mkdir()
    server = subprocess.Popen([sys.executable, "-c", MINIMAL_SCP, str(port), str(target)])
    try:
        wait_for_port(port)
        seconds = send(port, files, associations, "MINIMAL")
    finally:
        server.terminate()
        server.wait(10)
    return Run(seconds, len(files), megabytes)


def run_node(files: list[Path], megabytes: float, work: Path, associations: int,
             processes: int | str = "auto") -> Run:
    directory = work / f"node-{associations}"
    config = write_config(directory, {"workers": {"count": 0}, "logging": {"level": "WARNING"},
                                      "node": {"max_associations": 8, "max_connections_per_host": 8,
                                               "receiving_processes": processes}})
    node = NodeProcess(config).start()
    try:
        assert node.proc is not None
        with RssSampler(node.proc.pid) as sampler:
            seconds = send(node.port, files, associations, "PSMA_NODE")
        stored = len(list((directory / "storage").rglob("*.dcm")))
        if stored != len(files):
            raise RuntimeError(f"node stored {stored} of {len(files)} files")
    finally:
        node.stop()
    return Run(seconds, len(files), megabytes, sampler.peak_kb / 1024)


def disk_floor(work: Path, size: int, samples: int = 60) -> dict[str, float]:
    """Median latency (ms) of the flushes one durable instance needs, on the benchmark's filesystem."""
    data = os.urandom(size)
    names = ("file write+fsync", "rename+folder fsync", "SQLite commit (FULL)")
    timings: dict[str, list[float]] = {name: [] for name in names}
    connection = sqlite3.connect(work / "probe.db", isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("CREATE TABLE probe (x INTEGER)")
    for index in range(samples):
        started = time.perf_counter()
        fd = os.open(work / f"probe{index}.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        os.write(fd, data)
        os.fsync(fd)
        os.close(fd)
        timings["file write+fsync"].append(time.perf_counter() - started)
        started = time.perf_counter()
        os.replace(work / f"probe{index}.tmp", work / f"probe{index}.dcm")
        folder = os.open(work, os.O_RDONLY)
        os.fsync(folder)
        os.close(folder)
        timings["rename+folder fsync"].append(time.perf_counter() - started)
        started = time.perf_counter()
        connection.execute("BEGIN")
        connection.execute("INSERT INTO probe VALUES (?)", (index,))
        connection.execute("COMMIT")
        timings["SQLite commit (FULL)"].append(time.perf_counter() - started)
    connection.close()
    return {name: statistics.median(values) * 1000 for name, values in timings.items()}


def best(runs: list[Run]) -> Run:
    return min(runs, key=lambda run: run.seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs per configuration (best and median are reported)")
    args = parser.parse_args()
    for tool in ("storescu", "storescp"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found (apt-get install dcmtk)")
    files = study_files()
    megabytes = sum(path.stat().st_size for path in files) / 1e6
    print(f"study: {len(files)} instances, {megabytes:.0f} MB (CT 512² x 300, PET x 300); "
          f"{os.cpu_count()} CPUs; {args.repeat} alternating runs per receiver", flush=True)
    results: dict[str, list[Run]] = {}
    configurations = {
        "dcmtk storescp": lambda work: run_storescp(files, megabytes, work),
        "minimal pynetdicom SCP": lambda work: run_minimal(files, megabytes, work, 1),
        "minimal pynetdicom SCP, 4 assoc": lambda work: run_minimal(files, megabytes, work, 4),
        "node": lambda work: run_node(files, megabytes, work, 1),
        "node, 4 assoc": lambda work: run_node(files, megabytes, work, 4),
        "node in serve's threads": lambda work: run_node(files, megabytes, work, 1, 0),
        "node in serve's threads, 4 assoc": lambda work: run_node(files, megabytes, work, 4, 0),
    }
    for _ in range(args.repeat):
        for name, runner in configurations.items():
            with tempfile.TemporaryDirectory(prefix="bench-receive-", dir=OUT.parent) as work:
                results.setdefault(name, []).append(runner(Path(work)))
    print(f"{'receiver':34} {'s':>6} {'inst/s':>8} {'MB/s':>7} {'spread s':>12} {'peak RSS':>9}")
    for name, runs in results.items():
        top = best(runs)
        spread = f"{min(r.seconds for r in runs):.2f}-{max(r.seconds for r in runs):.2f}"
        rss = f"{max(r.peak_rss_mb or 0 for r in runs):.0f} MB" if top.peak_rss_mb else ""
        print(f"{name:34} {top.seconds:6.2f} {top.per_second:8.0f} {top.mb_per_second:7.0f} {spread:>12} "
              f"{rss:>9}")
    with tempfile.TemporaryDirectory(prefix="bench-receive-", dir=OUT.parent) as work:
        floor = disk_floor(Path(work), int(megabytes * 1e6 / len(files)))
    print("disk flush latency on this filesystem (median, ms): "
          + ", ".join(f"{name} {value:.2f}" for name, value in floor.items()))
    node, node4 = best(results["node"]), best(results["node, 4 assoc"])
    minimal, storescp = best(results["minimal pynetdicom SCP"]), best(results["dcmtk storescp"])
    threads, threads4 = best(results["node in serve's threads"]), best(results["node in serve's threads, 4 assoc"])
    def median(name: str) -> float:
        return statistics.median(run.per_second for run in results[name])

    # Runs alternate between the receivers, so on a noisy machine the medians compare like with like
    # better than the best runs (one lucky run decides a best); both are printed.
    print(f"node / minimal pynetdicom SCP (1 assoc): {node.per_second / minimal.per_second:.2f} best, "
          f"{median('node') / median('minimal pynetdicom SCP'):.2f} median  (target >= 0.9)")
    print(f"node 4 assoc / node 1 assoc:             {node4.per_second / node.per_second:.2f} best, "
          f"{median('node, 4 assoc') / median('node'):.2f} median  (target >= 1.7 on 2 cores)")
    print(f"in serve's threads: 1 assoc / minimal SCP {threads.per_second / minimal.per_second:.2f}, "
          f"4 assoc / 1 assoc {threads4.per_second / threads.per_second:.2f}")
    print(f"node / dcmtk storescp:                   {node.per_second / storescp.per_second:.2f}")
    extra = 1000 / node.per_second - 1000 / minimal.per_second
    flushes = floor["file write+fsync"] + floor["rename+folder fsync"] + floor["SQLite commit (FULL)"]
    print(f"node's extra time per instance over the minimal SCP: {extra:.1f} ms; its three disk flushes take "
          f"{flushes:.1f} ms in series (the node starts the file's during header parsing and runs the "
          "folder's and the commit's alongside it); the rest is header parsing and database statements")
    print(f"median node 1 assoc: {statistics.median(r.per_second for r in results['node']):.0f} inst/s; "
          f"peak node RSS {max(r.peak_rss_mb or 0 for r in results['node'] + results['node, 4 assoc']):.0f} "
          "MB "
          "(target < 500 MB)")


if __name__ == "__main__":
    main()
