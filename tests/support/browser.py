"""The dashboard in Debian's Chromium, driven by Playwright: one launch recipe and one login for the browser
tests (Playwright cannot download its own browsers here)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Page, sync_playwright

from tests.support.settings import PASSWORD
from tests.support.tools import require_tool

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""Without the background-networking flags Chromium keeps trying the closed network at every start."""


@contextmanager
def logged_in(base: str, path: str, user: str) -> Iterator[Page]:
    """A 1280×900 page of the dashboard at `base`, logged in as `user` (password `PASSWORD`), showing `path`."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=require_tool("chromium"), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{base}{path}")
            page.fill("input[name=username]", user)
            page.fill("input[name=password]", PASSWORD)
            page.click("form.login button[type=submit]")
            page.wait_for_url(f"{base}{path}")
            yield page
        finally:
            browser.close()
