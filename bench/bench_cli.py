"""How fast `psma-node` answers the everyday commands, against a bare Python start measured in the same run.

Each command runs in a fresh process (as a user types it) on a migrated, empty SQLite database; the
figure is the median wall time of several runs, with the CPU time (user + system) beside it, which
other processes on shared cores disturb less. Target: ≤ 0.5 s each.

    .venv/bin/python -m bench.bench_cli [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from db.session import upgrade

TARGET_S = 0.5
COMMANDS = (["--version"], ["config", "check"], ["studies", "list"], ["outbox", "list"], ["--help"])


def _run(argv: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(prog="bench.bench_cli", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(list(argv))
    entry = Path(sys.executable).with_name("psma-node")
    with tempfile.TemporaryDirectory(prefix="bench-cli-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'node.db'}"
        upgrade(url)
        config = Path(tmp) / "config.yaml"
        config.write_text(yaml.safe_dump({"database": {"url": url}}))
        print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}; median of {args.runs} runs")
        bare = [_run([sys.executable, "-c", "pass"]) for _ in range(args.runs)]
        floor = statistics.median(w for w, _ in bare)
        bare_cpu = statistics.median(c for _, c in bare)
        print(f"  {'reference: python -c pass':<28} wall {floor:5.3f} s  cpu {bare_cpu:5.3f} s")
        for command in COMMANDS:
            runs = [_run([str(entry), "--config", str(config), *command]) for _ in range(args.runs)]
            wall = statistics.median(w for w, _ in runs)
            cpu = statistics.median(c for _, c in runs)
            verdict = "met" if wall <= TARGET_S else "MISSED"
            print(
                f"  psma-node {' '.join(command):<18} wall {wall:5.3f} s  cpu {cpu:5.3f} s  "
                f"(min {min(w for w, _ in runs):5.3f}, {wall / floor:4.1f}x bare python)  "
                f"[≤ {TARGET_S} s: {verdict}]"
            )


if __name__ == "__main__":
    main(sys.argv[1:])
