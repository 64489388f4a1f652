"""Helpers of the viewer's end-to-end test: headless Chromium and a record of the page's requests.

Chromium is Debian's package (``make system-deps``), driven by Playwright's Python library; Playwright's own
browser downloads are never used. The browser reaches nothing but the loopback service.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Page, Response, sync_playwright

from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    # Every host name fails to resolve: the page talks only to the service at 127.0.0.1.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]
OPENSEADRAGON_JS = REPO / "app" / "viewer" / "static" / "vendor" / "openseadragon" / "openseadragon.min.js"


def require_browser_assets() -> None:
    """Fail, naming the set-up command, when Chromium or OpenSeadragon is missing (``make pytest`` installs
    both)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (Debian's chromium package)")
    if not OPENSEADRAGON_JS.is_file():
        pytest.fail(f"{OPENSEADRAGON_JS.relative_to(REPO)} is missing: run `make viewer-assets`")


@dataclass
class NetworkLog:
    """Every request the page made, and those that failed or were answered with an error status."""

    requests: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def clear(self) -> None:
        self.requests.clear()
        self.failed.clear()
        self.errors.clear()


def watch_network(page: Page, log: NetworkLog) -> None:
    """Record the page's requests into ``log`` from now on."""

    def on_response(response: Response) -> None:
        if response.status >= 400:
            log.errors.append(f"{response.status} {response.request.method} {response.url}")

    page.on("request", lambda request: log.requests.append(request.url))
    page.on("requestfailed", lambda request: log.failed.append(f"{request.url}: {request.failure}"))
    page.on("response", on_response)


@contextlib.contextmanager
def chromium_page(profile_dir: Path, *, width: int = 1280, height: int = 800) -> Iterator[Page]:
    """A page of headless Chromium with a fresh profile, closed on exit."""
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile_dir),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height},
            accept_downloads=True,
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(30_000)
            yield page
        finally:
            context.close()
