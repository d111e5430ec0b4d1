"""Synthetic study generation and sending, against reference tools measured in the same run.

Figures: seconds for a default study (512² CT, 200² PET over 600 mm) per transfer syntax, MB/s written,
in-process and as `psma-node synth OUT` in a fresh process (what a user waits for; target ≤ 3 s); ratios
against (a) writing the same pixel bytes as raw files with numpy, (b) dcm2niix converting the
generated CT series, (c) dcmtk storescu sending the study vs our pynetdicom `--send` (both to storescp).
Run: `.venv/bin/python -m bench.bench_synth` (or `-m bench synth`).
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from dicom_node.synth import SynthOptions, generate_study
from dicom_node.synth.transmit import send_files, study_files
from tests.support.node import free_port, wait_for_port

REPEATS = 3
TARGET_S = 3.0


def _megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.dcm")) / 1e6


def _timed(action) -> float:  # noqa: ANN001 - any zero-argument callable
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _raw_write_seconds(study: Path, scratch: Path) -> float:
    """Write as many raw files of the same sizes as the study's pixel data (the floor of any writer)."""
    sizes = [p.stat().st_size for p in study.rglob("*.dcm")]
    blob = np.random.default_rng(0).integers(0, 255, max(sizes), dtype=np.uint8)
    scratch.mkdir()

    def write() -> None:
        for i, size in enumerate(sizes):
            blob[:size].tofile(scratch / f"{i}.raw")
    return _timed(write)


def _cli_seconds(folder: Path) -> tuple[float, float]:
    """Wall and CPU seconds of `psma-node synth FOLDER` in a fresh process, imports included."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [str(Path(sys.executable).with_name("psma-node")), "synth", str(folder)]
    wall = _timed(lambda: subprocess.run(command, check=True, capture_output=True))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _storescp(received: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(["storescp", "-od", str(received), "+xa", str(port)],
                               env={**os.environ, "TCP_NODELAY": "1"},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, timeout=10)
    return process, port


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench_synth_") as tmp:
        root = Path(tmp)
        seconds = []
        for run in range(REPEATS):
            folder = root / f"explicit{run}"
            seconds.append(_timed(lambda: generate_study(folder, SynthOptions(seed=run))))
        study = root / "explicit0"
        size = _megabytes(study)
        median = statistics.median(seconds)
        print(f"load average {os.getloadavg()[0]:.1f}")
        print(f"default study (explicit VR LE), in process: {median:.2f} s median of {REPEATS} "
              f"(min {min(seconds):.2f}), {size:.0f} MB, {size / median:.0f} MB/s")
        cli = [_cli_seconds(root / f"cli{run}") for run in range(REPEATS)]
        cli_wall = statistics.median(w for w, _ in cli)
        print(f"psma-node synth (fresh process, default study): {cli_wall:.2f} s wall median of {REPEATS} "
              f"(min {min(w for w, _ in cli):.2f}), cpu {statistics.median(c for _, c in cli):.2f} s "
              f"[target ≤ {TARGET_S:g} s: {'met' if cli_wall <= TARGET_S else 'MISSED'}]")
        raw = _raw_write_seconds(study, root / "raw")
        print(f"reference raw numpy write of the same bytes: {raw:.2f} s -> "
              f"generation/raw = {median / raw:.1f}x")
        if shutil.which("dcm2niix"):
            nifti = root / "nifti"
            nifti.mkdir()
            command = ["dcm2niix", "-z", "n", "-o", str(nifti), str(study / "CT")]
            convert = _timed(lambda: subprocess.run(command, check=True, capture_output=True))
            print(f"reference dcm2niix converting the CT series: {convert:.2f} s -> "
                  f"generation/dcm2niix = {median / convert:.2f}x")
        for syntax in ("rle", "jpeg2000"):
            folder = root / syntax
            took = _timed(lambda: generate_study(folder, SynthOptions(seed=0, transfer_syntax=syntax)))
            print(f"default study ({syntax}): {took:.2f} s, {_megabytes(folder):.0f} MB "
                  f"({_megabytes(folder) / size:.0%} of uncompressed)")
        if shutil.which("storescu") and shutil.which("storescp"):
            files = study_files(study)
            for label, sender in (
                ("dcmtk storescu", lambda port: subprocess.run(
                    ["storescu", "-aec", "ANY", "127.0.0.1", str(port), *map(str, files)],
                    check=True, capture_output=True, env={**os.environ, "TCP_NODELAY": "1"})),
                ("psma-node synth --send (pynetdicom)",
                 lambda port: send_files(files, "127.0.0.1", port, "ANY")),
            ):
                received = root / f"recv-{label.split()[0]}"
                received.mkdir()
                process, port = _storescp(received)
                try:
                    took = _timed(lambda: sender(port))
                finally:
                    process.terminate()
                    process.wait(timeout=10)
                print(f"send {len(files)} instances ({size:.0f} MB) with {label}: {took:.2f} s "
                      f"({len(list(received.iterdir()))} stored)")


if __name__ == "__main__":
    main()
