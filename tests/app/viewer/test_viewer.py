"""The viewer page end to end, in headless Chromium against the real API and a real worker.

A person's path through the page: sign in (a wrong token first), upload the real RCM tile, choose the
parameters, follow the job to ``finished``, open it, and look at the mosaic with its heatmap and mask. The
screenshot goes to ``test-artifacts/viewer.png``; with ``RCMSEG_UPDATE_DOCS=1`` also to ``docs/viewer.png``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Locator, Page, expect

from tests.app.conftest import TOKENS, Service
from tests.app.viewer.helpers import NetworkLog, chromium_page, require_browser_assets, watch_network
from tests.conftest import REPO

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "test-artifacts"
DOCS_SCREENSHOT = REPO / "docs" / "viewer.png"
LAYERS_LOADED = """() => {
    const v = window.rcmseg.viewer;
    if (!v || v.world.getItemCount() !== 3) return false;
    for (let i = 0; i < 3; i++) {
        const item = v.world.getItemAt(i);
        if (item.getOpacity() > 0 && !item.getFullyLoaded()) return false;  // hidden layers load nothing
    }
    return true;
}"""


@pytest.fixture(scope="module")
def viewer_service(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """The API serving the page, and one worker."""
    require_browser_assets()
    svc = Service(service_env, tmp_path_factory.mktemp("viewer-logs"))
    try:
        svc.start_worker("w1")
        svc.start_api()
        svc.wait_workers(1)
        yield svc
    finally:
        svc.stop()


def _service_logs(service: Service, lines: int = 30) -> str:
    tails = []
    for log in sorted(service.logs.glob("*.log")):
        tails.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
    return "\n".join(tails)


def _item_state(page: Page, index: int) -> dict[str, Any]:
    return page.evaluate(
        "(i) => { const item = rcmseg.viewer.world.getItemAt(i);"
        " return {url: item.source.tilesUrl, opacity: item.getOpacity()}; }",
        index,
    )


def _save_screenshot(page: Page) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "viewer.png"
    page.screenshot(path=str(shot))
    if os.environ.get("RCMSEG_UPDATE_DOCS") == "1":
        shutil.copyfile(shot, DOCS_SCREENSHOT)
    return shot


def _start_job(page: Page) -> Locator:
    """Click "Start segmentation" and return the new job's row, found by the id the API gave it."""
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith("/v1/jobs")
    ) as response:
        page.get_by_role("button", name="Start segmentation").click()
    job_id = response.value.json()["id"]
    row = page.locator(f'#job-list li[data-job-id="{job_id}"]')
    row.wait_for()
    return row


def test_sign_in_upload_follow_and_view_a_job(
    viewer_service: Service, real_tile: Path, tmp_path: Path
) -> None:
    network = NetworkLog()
    with chromium_page(tmp_path / "profile") as page:
        watch_network(page, network)
        page.goto(viewer_service.url + "/")

        # A wrong token is refused with a message, and nothing else is shown.
        page.get_by_label("Access token").fill("not-the-right-token-at-all")
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("alert").filter(has_text="this token was not accepted").wait_for()
        assert page.locator("#workspace").is_hidden()
        network.clear()

        page.get_by_label("Access token").fill(TOKENS["alice"])
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("heading", name="New job").wait_for()
        assert page.get_by_label("Model", exact=True).input_value() == "tiny"

        # Upload: the progress bar fills and the mosaic's size is shown; the parameters open up.
        page.get_by_label("Mosaic (TIFF, PNG, JPEG or BMP)").set_input_files(str(real_tile))
        page.locator("#upload-status").filter(has_text="1024 × 1024 px, 16-bit").wait_for()
        assert page.locator("#upload-progress").evaluate("p => p.value") == 1
        assert page.get_by_label("Step (px)").is_enabled()

        # 0.5 um/px against the tiny model's 2 um/px: a 256 x 256 px processing image, a few seconds on CPU.
        page.get_by_label("Step (px)").fill("16")
        page.get_by_label("Threshold").fill("0.3")
        page.get_by_label("Pixel size (µm)").fill("0.5")
        estimate = page.locator("#cost-estimate").inner_text()
        assert "169 windows of 64 px over 256 × 256 px" in estimate, estimate

        row = _start_job(page)
        # the list re-renders on every poll: wait on the badge's text, re-queried each time
        expect(row.locator(".badge")).to_have_text(
            re.compile(r"^(finished|failed|canceled)$"), timeout=240_000
        )
        if row.locator(".badge").inner_text() != "finished":
            pytest.fail(f"the job did not finish: {row.inner_text()}\n{_service_logs(viewer_service)}")
        assert "aspecific" in row.locator(".job-detail").inner_text()
        row.get_by_role("button", name="Open the result of rcm_tile_isic_16bit.png").click()

        # OpenSeadragon holds the mosaic, the heatmap and the mask, every tile loaded.
        page.wait_for_function(LAYERS_LOADED, timeout=30_000)
        layers = [_item_state(page, i) for i in range(3)]
        assert [layer["url"].rstrip("/").rsplit("/", 1)[-1] for layer in layers] == [
            "mosaic_files",
            "heatmap_files",
            "mask_files",
        ]
        assert layers[0]["opacity"] == 1
        assert layers[1]["opacity"] == pytest.approx(0.6)
        assert layers[2]["opacity"] == 0  # outline mode: the mask is drawn from the GeoJSON

        # The opacity slider drives the heatmap layer, with the mouse-free keyboard too.
        slider = page.get_by_label("Heatmap opacity")
        slider.fill("0.3")
        assert _item_state(page, 1)["opacity"] == pytest.approx(0.3)
        slider.press("ArrowRight")
        assert _item_state(page, 1)["opacity"] == pytest.approx(0.35)
        assert page.locator("#heatmap-opacity-value").inner_text() == "35%"

        # Mask: fill shows the mask layer, outline draws the GeoJSON's regions.
        page.get_by_label("Fill", exact=True).check()
        assert _item_state(page, 2)["opacity"] == pytest.approx(0.45)
        assert page.locator("#mask-outline").is_hidden()
        page.get_by_label("Outline", exact=True).check()
        assert _item_state(page, 2)["opacity"] == 0
        summary = page.locator("#summary-list").inner_text()
        regions = int(summary.split("Regions", 1)[1].split()[0])
        if regions:
            assert (page.locator("#mask-outline path").get_attribute("d") or "").count("M") >= regions

        assert "Aspecific area" in summary and "random-test_efficientnet (tiny)" in summary
        assert page.locator("#legend").is_visible()
        assert page.locator("#scalebar-label").inner_text().endswith(("µm", "mm"))

        # Downloads carry the token and arrive as files.
        with page.expect_download() as download:
            page.get_by_role("button", name="Regions GeoJSON (QuPath)").click()
        assert download.value.suggested_filename.endswith("-regions.geojson")
        geojson = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
        assert geojson["type"] == "FeatureCollection" and len(geojson["features"]) == regions

        # Zoom and pan with the keyboard, then back home for the screenshot.
        zoom = "rcmseg.viewer.viewport.getZoom(true)"
        home_zoom = page.evaluate(zoom)
        page.locator("#osd .openseadragon-canvas[tabindex='0']").focus()
        for key in ("Equal", "ArrowLeft"):  # OpenSeadragon zooms and pans while a key is held
            page.keyboard.down(key)
            page.wait_for_timeout(300)
            page.keyboard.up(key)
        page.wait_for_function(f"{zoom} > {home_zoom} * 1.05")
        page.wait_for_timeout(300)
        page.keyboard.press("0")  # home
        page.wait_for_function(f"Math.abs({zoom} / {home_zoom} - 1) < 0.01")
        slider.fill("0.6")
        page.wait_for_function(LAYERS_LOADED)
        page.evaluate("document.activeElement.blur()")
        page.wait_for_timeout(800)  # the viewport's spring animation settles
        _save_screenshot(page)

        # A job far too big for this machine, canceled from the list, says so.
        page.get_by_label("Step (px)").fill("1")
        page.get_by_label("Pixel size (µm)").fill("2")
        assert "923,521 windows" in page.locator("#cost-estimate").inner_text()
        big = _start_job(page)
        assert page.locator("#job-list li").count() == 2
        big.get_by_role("button", name="Cancel the job on rcm_tile_isic_16bit.png").click()
        big.locator(".status-canceled").wait_for(timeout=30_000)
        assert big.locator(".job-error").inner_text() == "Canceled."

        # A tablet held upright: one scrollable page, nothing wider than the screen.
        page.set_viewport_size({"width": 820, "height": 1180})
        assert page.evaluate("document.documentElement.scrollWidth") <= 820
        box = page.locator("#osd").bounding_box()
        assert box is not None and box["width"] > 400
        assert slider.is_visible()
        page.screenshot(path=str(ARTIFACTS / "viewer-tablet.png"), full_page=True)

        page.get_by_role("button", name="Sign out").click()
        page.get_by_label("Access token").wait_for()
        assert page.evaluate("sessionStorage.length") == 0

        stats = page.evaluate("rcmseg.stats")

    assert stats["tileFailures"] == [] and stats["layerFailures"] == [], stats
    assert stats["tilesLoaded"] > 0
    assert network.failed == [], network.failed
    assert network.errors == [], network.errors
    outside = [u for u in network.requests if not u.startswith((viewer_service.url + "/", "blob:", "data:"))]
    assert outside == [], outside
