"""Headless Chromium for the tests that look at a page (DVC's plots, the MLflow UI): the system's
``/usr/bin/chromium`` (``apt-get install chromium``; CI installs it) driven by Playwright, every request
outside ``file:`` and loopback refused, so a page that needs the network shows it. Skips when either is absent."""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

import pytest

CHROMIUM = os.environ.get("CIM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
LOCAL = ("file:", "http://127.0.0.1", "data:", "blob:")


@contextlib.contextmanager
def page(width: int = 1400, height: int = 900) -> Iterator:
    """A fresh browser (empty profile: what a newcomer's first visit sees) and one page; ``page.errors``
    collects its uncaught script errors, ``page.refused`` the URLs it tried to reach outside this machine."""
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not os.path.isfile(CHROMIUM):
        pytest.skip("no chromium at /usr/bin/chromium (apt-get install chromium)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        try:
            pg = browser.new_page(viewport={"width": width, "height": height})
            pg.errors, pg.refused = [], []
            pg.on("pageerror", lambda e: pg.errors.append(str(e)))

            def route(r):
                if r.request.url.startswith(LOCAL):
                    r.continue_()
                else:
                    pg.refused.append(r.request.url)
                    r.abort()

            pg.route("**/*", route)
            yield pg
        finally:
            browser.close()
