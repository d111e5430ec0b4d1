"""Local performance and drift alarms on a real `psma-node serve` in Chromium, and the command line against
the same node: the page shows the figures computed independently here, `evaluate --json` prints them too,
the drift banner is on every page, `monitoring status` lists the alarms and /metrics carries the gauge.

`serve` raises the alarms itself, on its monitoring tick. The screenshots in docs/images
(dashboard-performance.png, dashboard-drift-alarm.png) come from this test:
`PSMA_DASHBOARD_ARTIFACTS=docs/images` writes them there; otherwise they go to the test's temporary folder.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from db.monitoring import open_alarms
from db.session import make_engine, make_session_factory, transaction
from tests.db.seed_cases import CaseSpec, mixed_cohort, seed_case
from tests.dicom_node.evaluation import drift_scenario as scenario
from tests.dicom_node.evaluation import independent
from tests.support.browser import logged_in
from tests.support.db import migrate
from tests.support.node import REPO, wait_for_port
from tests.support.settings import FAST_HASH

VALIDATION_START = dt.datetime(2025, 1, 13, 8, tzinfo=dt.timezone.utc)
MONITORING = {
    "baseline_days": 14,
    "baseline_min_results": 30,
    "baseline_start": scenario.START.date(),
    "tick_seconds": 1,
}
"""The scenario's settings, its baseline starting after the validation (as a site would set it); `serve`
judges the history every second, on the real clock (the scenario lies wholly in the past)."""


def _seed(db_url: str, tmp_path: Path) -> list[CaseSpec]:
    """A validation cohort in January, then the drift scenario's five weeks."""
    migrate(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    cohort = mixed_cohort(seed=21, n=60, at=VALIDATION_START)
    with transaction(sessions) as session:
        for spec in cohort:
            seed_case(session, spec)
        for made in scenario.results():
            seed_case(
                session,
                CaseSpec(
                    made.probability,
                    at=made.at,
                    manufacturer=made.scanner[0],
                    scanner_model=made.scanner[1],
                    software=made.software,
                    weights_sha256=made.weights,
                ),
            )
    engine.dispose()
    return cohort


def _open_alarms(db_url: str) -> int:
    engine = make_engine(db_url)
    try:
        with make_session_factory(engine)() as session:
            return len(open_alarms(session))
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_performance_page_and_drift_banner_on_a_real_node(
    db_url: str, tmp_path: Path, node_factory
) -> None:
    cohort = _seed(db_url, tmp_path)
    expected = independent.expected_for(cohort, 0.5)
    node = node_factory(
        {
            "workers": {"count": 0},
            "dashboard": {
                "enabled": True,
                "users": [{"name": "alice", "password_hash": FAST_HASH}],
                "session_secret": "browser-test",
                "public_metrics": True,
            },
            "monitoring": MONITORING,
        },
        db_url=db_url,
    )
    port = int(node.config["dashboard"]["port"])
    wait_for_port(port)
    node.wait_until(
        lambda: _open_alarms(db_url) == 4, timeout=60, what="serve's monitoring tick raising 4 alarms"
    )
    base = f"http://127.0.0.1:{port}"
    shots = Path(os.environ.get("PSMA_DASHBOARD_ARTIFACTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "dicom_node.cli.main", "--config", str(node.config_path), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )

    printed = json.loads(command("evaluate", "--json", "--until", "2025-02-01").stdout)
    for name in independent.LABELS:
        independent.assert_figure(printed[name], expected[name])
    status = command("monitoring", "status")
    assert status.returncode == 1 and len(status.stdout.splitlines()) == 4
    metrics = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
    assert (
        'psma_node_monitoring_alarm{kind="statistic",scanner="SIEMENS Biograph Vision 600",'
        'subject="positive_rate"} 1.0' in metrics
    )

    with logged_in(base, "/studies", "alice") as page:
        banner = page.locator(".alarm-banner")
        assert "4 monitoring alarms" in banner.inner_text()

        page.click("header nav >> text=Performance")
        page.fill("input[name=until]", "2025-02-01")
        page.click("form.filters button")
        page.wait_for_url("**/performance?**until=2025-02-01**")
        page.locator("#roc-plot").wait_for()
        independent.assert_metrics_table(page.content(), expected)
        page.screenshot(path=str(shots / "dashboard-performance.png"), full_page=True)

        page.click("header nav >> text=Monitoring")
        page.wait_for_url(f"{base}/monitoring")
        page.locator("img.series").first.wait_for()
        assert "positive-call rate on SIEMENS Biograph Vision 600" in page.inner_text(".alarm-banner")
        assert page.locator("table.alarms tbody tr").count() == 4
        page.screenshot(path=str(shots / "dashboard-drift-alarm.png"))

