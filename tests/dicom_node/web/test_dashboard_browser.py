"""The dashboard in a real browser against a real `psma-node serve`: log in, find a study, see its images."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from db.session import make_engine, make_session_factory
from tests.db.seed import seed
from tests.support.browser import CHROMIUM_ARGS
from tests.support.db import migrate
from tests.support.node import wait_for_port
from tests.support.settings import FAST_HASH, PASSWORD, make_settings


@pytest.mark.slow
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_admin_logs_in_finds_a_study_and_sees_its_secondary_capture(
    db_url: str, tmp_path: Path, node_factory, require_chromium: str
) -> None:
    migrate(db_url)
    engine = make_engine(db_url)
    settings = make_settings(tmp_path / "node", db_url)
    done, _failed = seed(make_session_factory(engine), settings)
    engine.dispose()
    node = node_factory(
        {
            "storage": {
                "directory": str(settings.storage.directory),
                "results_directory": str(settings.storage.results_directory),
            },
            "workers": {"count": 0},
            "dashboard": {
                "enabled": True,
                "users": [{"name": "alice", "password_hash": FAST_HASH}],
                "session_secret": "browser-test",
            },
        },
        db_url=db_url,
    )
    port = int(node.config["dashboard"]["port"])
    wait_for_port(port)
    base = f"http://127.0.0.1:{port}"
    shots = tmp_path / "screenshots"  # kept by pytest's tmp folder for a look after a failure
    shots.mkdir()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=require_chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{base}/studies")
            assert "/login" in page.url
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", "wrong password")
            page.click("button[type=submit]")
            assert page.locator(".error").inner_text() == "Wrong user name or password."
            page.fill("input[name=username]", "alice")
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/studies")
            page.screenshot(path=str(shots / "studies.png"), full_page=True)

            page.fill("input[name=q]", "ACC-DONE")
            page.click("form.search button")
            links = page.locator("a.study-link")
            assert links.count() == 1
            links.first.click()
            page.wait_for_url(f"**/studies/{done.study_uid}")
            assert "Sentinel^Zebra" in page.inner_text("dl.facts")
            image = page.locator("img.sc").first
            image.wait_for()
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
            size = image.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            assert size == [128, 96]
            timeline = page.inner_text("table.timeline")
            assert "finished" in timeline and "created" in timeline
            page.screenshot(path=str(shots / "study.png"), full_page=True)

            page.click("text=Failures")
            assert "RadiopharmaceuticalStartDateTime missing" in page.inner_text("main")
            page.click("text=Health")
            assert "worker-1" in page.inner_text("main")
            page.screenshot(path=str(shots / "health.png"), full_page=True)
            page.click("text=Log out")
            page.wait_for_url("**/login")
        finally:
            browser.close()


@pytest.fixture
def require_chromium() -> str:
    from tests.support.tools import require_tool

    return require_tool("chromium")
