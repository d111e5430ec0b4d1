"""Local performance and drift monitoring on a site's history: how long `psma-node evaluate` and one
monitoring tick take when the node has analysed thousands of studies.

A migrated SQLite database is seeded with N analysed studies spread over a year (two scanners, reference
standards for three quarters, one or two readers each; rows only, as the pipeline and the outcome intake
leave them). Then, measured in the same run:

- the reference floor: scikit-learn's ROC AUC and statsmodels' Wilson intervals on the same arrays, what
  any evaluation must compute at least;
- the node in-process: loading the cohort, `evaluate`, the JSON object, the HTML report with its plots;
- `psma-node evaluate --json` as an admin runs it (a new process: imports included);
- one monitoring tick (`current_state`: every result read and judged per scanner and day).

Targets: `evaluate --json` ≤ 5 s and a monitoring tick ≤ 2 s at 5000 studies (the tick runs every
`monitoring.tick_seconds`, hourly by default).

    .venv/bin/python -m bench.bench_evaluation [--studies 5000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from db.cohort import load_cohort
from db.session import make_engine, make_session_factory, transaction
from dicom_node.config import Settings
from dicom_node.evaluation.monitoring import current_state
from dicom_node.evaluation.performance import evaluate
from dicom_node.evaluation.presentation import html_report
from tests.db.seed_cases import mixed_cohort, seed_case
from tests.support.db import migrate

REPO = Path(__file__).resolve().parents[1]
START = dt.datetime(2025, 1, 6, 8, tzinfo=dt.timezone.utc)


def _seed(url: str, studies: int) -> None:
    migrate(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    step = dt.timedelta(days=365) / studies
    with transaction(sessions) as session:
        for n, spec in enumerate(mixed_cohort(seed=5, n=studies, at=START)):
            spec.at = START + n * step
            seed_case(session, spec)
    engine.dispose()


def _best(action: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    """Best wall time of `runs` calls, and the last call's value."""
    times, value = [], None
    for _ in range(runs):
        started = time.perf_counter()
        value = action()
        times.append(time.perf_counter() - started)
    return min(times), value


def _reference_floor(url: str, threshold: float) -> float:
    """AUC and the six Wilson intervals on bare arrays: what any evaluation computes at least."""
    from sklearn.metrics import roc_auc_score
    from statsmodels.stats.proportion import proportion_confint

    engine = make_engine(url)
    with make_session_factory(engine)() as session:
        cases = [c for c in load_cohort(session).cases if c.probability is not None and c.reference is not None]
    engine.dispose()
    truth = [bool(c.reference) for c in cases]
    scores = [float(c.probability) for c in cases]  # type: ignore[arg-type]

    def compute() -> None:
        roc_auc_score(truth, scores)
        calls = [s >= threshold for s in scores]
        tp = sum(t and c for t, c in zip(truth, calls))
        tn = sum(not t and not c for t, c in zip(truth, calls))
        for k, n in ((tp, sum(truth)), (tn, len(truth) - sum(truth)), (tp + tn, len(truth))):
            proportion_confint(k, n, method="wilson")

    return _best(compute)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-evaluation-") as folder:
        url = f"sqlite:///{Path(folder) / 'node.db'}"
        started = time.perf_counter()
        _seed(url, args.studies)
        print(f"seeded {args.studies} analysed studies over 365 days in {time.perf_counter() - started:.1f} s")
        settings = Settings.model_validate({"database": {"url": url}})
        threshold = settings.models.threshold
        floor = _reference_floor(url, threshold)
        engine = make_engine(url)
        sessions = make_session_factory(engine)

        def in_process() -> Any:
            with sessions() as session:
                return evaluate(load_cohort(session), threshold)

        evaluated_s, evaluation = _best(in_process)
        json_s, _ = _best(lambda: json.dumps(evaluation.to_json(), allow_nan=False))
        html_s, page = _best(lambda: html_report(evaluation, node="BENCH"))
        now = START + dt.timedelta(days=366)

        def tick() -> Any:
            with sessions() as session:
                return current_state(session, settings, now)

        tick_s, _state = _best(tick)
        engine.dispose()
        config = Path(folder) / "config.yaml"
        config.write_text(yaml.safe_dump({"database": {"url": url}}))
        command = [sys.executable, "-m", "dicom_node.cli.main", "--config", str(config), "evaluate", "--json"]
        cli_s, _ = _best(lambda: subprocess.run(command, check=True, capture_output=True, cwd=REPO))

    included = evaluation.to_json()["counts"]
    rows = [
        ("reference floor: scikit-learn AUC + statsmodels Wilson", floor),
        ("node in-process: load cohort + evaluate", evaluated_s),
        ("node: JSON object", json_s),
        (f"node: HTML report with plots ({len(page) // 1024} KiB)", html_s),
        ("psma-node evaluate --json (new process)", cli_s),
        ("monitoring tick (current_state, 365 days)", tick_s),
    ]
    print(f"cohort: {json.dumps(included)}")
    for label, seconds in rows:
        print(f"{label:60s} {seconds:8.3f} s")
    print(f"evaluate in-process / reference floor: {evaluated_s / floor:.1f}")
    print(f"evaluate --json: {'met' if cli_s <= 5.0 else 'missed'} (target <= 5 s, ratio {cli_s / 5.0:.2f})")
    print(f"monitoring tick: {'met' if tick_s <= 2.0 else 'missed'} (target <= 2 s, ratio {tick_s / 2.0:.2f})")


if __name__ == "__main__":
    main()
