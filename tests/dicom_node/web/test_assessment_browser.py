"""The assessment and reference-standard forms in a real browser against a real `psma-node serve`: a reader
logs in, assesses the study's result beside its images, records the reference standard, and sees both in
the history. The screenshot of the form is the one in docs/images/dashboard-assessment.png (written to
$PSMA_DASHBOARD_ARTIFACTS when set, else to the test's temporary folder)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from db.models import ReaderAssessment, ReferenceStandard
from db.session import make_engine, make_session_factory
from tests.db.seed import seed
from tests.support.browser import logged_in
from tests.support.db import migrate
from tests.support.node import wait_for_port
from tests.support.settings import FAST_HASH, make_settings


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_reader_assesses_a_result_and_records_the_reference_standard_in_the_browser(
    db_url: str, tmp_path: Path, node_factory
) -> None:
    migrate(db_url)
    engine = make_engine(db_url)
    sessions = make_session_factory(engine)
    settings = make_settings(tmp_path / "node", db_url)
    done, _failed = seed(sessions, settings)
    node = node_factory({
        "storage": {"directory": str(settings.storage.directory),
                    "results_directory": str(settings.storage.results_directory)},
        "workers": {"count": 0},
        "dashboard": {"enabled": True, "users": [{"name": "rita", "password_hash": FAST_HASH}],
                      "session_secret": "browser-test"},
    }, db_url=db_url)
    port = int(node.config["dashboard"]["port"])
    wait_for_port(port)
    base = f"http://127.0.0.1:{port}"
    shots = Path(os.environ.get("PSMA_DASHBOARD_ARTIFACTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)

    with logged_in(base, f"/studies/{done.study_uid}", "rita") as page:
        form = page.locator("form.assessment")
        form.locator("select[name=verdict]").select_option("disagree")
        form.locator("select[name=reader_finding]").select_option("absent")
        form.locator("select[name=reason]").select_option("false-positive-physiological")
        form.locator("select[name=seen_ai_before_report]").select_option("no")
        form.locator("textarea[name=comment]").fill("Uptake is urine in a bladder diverticulum.")
        image = page.locator("img.sc").first
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
        page.locator("article.result").first.screenshot(path=str(shots / "dashboard-assessment.png"))
        form.locator("button[type=submit]").click()
        page.wait_for_url(f"**/studies/{done.study_uid}#assessments")
        history = page.inner_text("table.assessments")
        assert "Disagree with the AI result" in history and "rita" in history
        assert "False positive: physiological or urinary bladder uptake" in history

        reference = page.locator("form.reference")
        reference.locator("select[name=recurrence]").select_option("no")
        reference.locator("select[name=method]").select_option("imaging-follow-up")
        reference.locator("input[name=date]").fill("2025-03-01")
        reference.locator("input[name=source]").fill("MRI 2025-03")
        reference.locator("button[type=submit]").click()
        page.wait_for_url(f"**/studies/{done.study_uid}#reference-standard")
        assert "Imaging follow-up" in page.inner_text("table.references")
        page.screenshot(path=str(tmp_path / "study-with-outcomes.png"), full_page=True)  # for a look
    with sessions() as session:
        (assessment,) = session.scalars(select(ReaderAssessment)).all()
        (standard,) = session.scalars(select(ReferenceStandard)).all()
    engine.dispose()
    assert (assessment.reader, assessment.source, assessment.verdict, assessment.seen_ai_before_report) == (
        "rita", "dashboard", "disagree", False)
    assert (standard.recurrence, standard.method, str(standard.reference_date), standard.channel) == (
        False, "imaging-follow-up", "2025-03-01", "dashboard")
