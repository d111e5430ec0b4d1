"""Run every benchmark module (`bench/bench_*.py`) in name order, or only those named on the command line."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(selected: list[str]) -> int:
    folder = Path(__file__).resolve().parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(folder)]) if m.name.startswith("bench_"))
    if selected:
        names = [n for n in names if n in selected or n.removeprefix("bench_") in selected]
    failed = []
    for name in names:
        print(f"=== {name} ===", flush=True)
        started = time.perf_counter()
        sys.argv = [f"bench.{name}"]  # each benchmark parses its own (here: default) arguments
        try:
            importlib.import_module(f"bench.{name}").main()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            print(f"{name} failed: {exc!r}", flush=True)
            failed.append(name)
        print(f"=== {name} done in {time.perf_counter() - started:.1f} s ===", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
