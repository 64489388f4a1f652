"""The shipped model's screenshots of the docs, made as a person would: a real ``rcmseg serve`` on the CPU
with the repository's zoo, the page at 1280 x 800, a mosaic uploaded with every field left empty (the card's
defaults and the file's pixel size), the result opened once its tiles are loaded.

    .venv/bin/rcmseg phantom --out /tmp/ph --count 8 --seed 0 --max-side-um 1500
    .venv/bin/python -m tests.app.viewer.shipped_screenshot /tmp/ph/phantom-s0-0001.tif docs/viewer.png
    .venv/bin/python -m tests.app.viewer.shipped_screenshot ../shared/data/rcm_tile_isic_16bit.png \\
        docs/viewer-real-tile.png

It prints what the page showed (placeholders, the defaults line, the estimate, the job's row) so that the
generated blocks of docs/viewer.md can be compared with the page itself.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

from playwright.sync_api import expect

from tests.app.viewer.helpers import chromium_page, require_browser_assets
from tests.app.viewer.test_viewer import AT_HOME, LAYERS_LOADED, VIEW_SETTLED, _wait_until
from tests.conftest import REPO, free_port

JOB_TIMEOUT_MS = 900_000
RESIZED = """() => {
    const viewer = rcmseg.viewer, size = viewer.viewport.getContainerSize();
    return size.x === viewer.container.clientWidth && size.y === viewer.container.clientHeight;
}"""
"""OpenSeadragon's idea of its container's size is the container's (it notices a resize a frame later)."""


def serve(data: Path, port: int, log: Path) -> tuple[subprocess.Popen[str], str]:
    """``rcmseg serve`` with the repository's zoo on the CPU, and the token its banner prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMSEG_") and k != "REDIS_URL"}
    env.update(
        PYTHONUNBUFFERED="1",
        RCMSEG_DATA_DIR=str(data),
        RCMSEG_MODEL_ZOO=str(REPO / "models" / "zoo"),
        RCMSEG_DEVICE="cpu",
    )
    proc = subprocess.Popen(
        [str(REPO / ".venv" / "bin" / "rcmseg"), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None
    token = ""
    for line in proc.stdout:
        if match := re.match(r"^token: (\S+)", line):
            token = match.group(1)
        if "Press Ctrl-C" in line:
            return proc, token
    raise RuntimeError(f"rcmseg serve exited with {proc.wait()}; see {log}")


def screenshot(mosaic: Path, out: Path, work: Path) -> None:
    require_browser_assets()
    port = free_port()
    proc, token = serve(work / "data", port, work / "serve.log")
    try:
        with chromium_page(work / "profile", width=1280, height=800) as page:
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_label("Access token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_role("heading", name="New job").wait_for()
            page.get_by_label("Mosaic (TIFF, PNG, JPEG or BMP)").set_input_files(str(mosaic))
            page.locator("#upload-status").filter(has_text="Uploaded").wait_for(timeout=120_000)
            for label in ("Step (px)", "Sigma (px)", "Threshold"):
                print(f"{label}: {page.get_by_label(label, exact=True).get_attribute('placeholder')}")
            print(page.locator("#defaults-hint").inner_text())
            print(page.locator("#cost-estimate").inner_text())
            page.get_by_role("button", name="Start segmentation").click()
            row = page.locator("#job-list li").first
            row.wait_for()
            expect(row.locator(".badge")).to_have_text(
                re.compile(r"^(finished|failed|canceled)$"), timeout=JOB_TIMEOUT_MS
            )
            print(" · ".join(row.inner_text().splitlines()))
            row.get_by_role("button", name=re.compile("^Open the result")).click()
            _wait_until(page, LAYERS_LOADED, timeout=120_000)
            page.evaluate("document.activeElement.blur()")
            # OpenSeadragon has noticed that the result panel narrowed its container; then the home button:
            # the whole mosaic in view, still, every tile loaded.
            _wait_until(page, RESIZED, timeout=60_000)
            page.evaluate("rcmseg.viewer.viewport.goHome()")
            for ready in (AT_HOME, VIEW_SETTLED, LAYERS_LOADED):
                _wait_until(page, ready, timeout=60_000)
            page.screenshot(path=str(out))
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal
        proc.wait(timeout=120)
    print(f"wrote {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("mosaic", type=Path, help="the mosaic to upload")
    parser.add_argument("out", type=Path, help="the PNG to write, e.g. docs/viewer.png")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rcmseg-screenshot-") as work:
        screenshot(args.mosaic.resolve(), args.out.resolve(), Path(work))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
