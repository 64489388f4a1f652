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
import time
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


MASK_PIXELS = """async (thresholds) => {
    const source = rcmseg.layers.mask.source;
    const token = sessionStorage.getItem("rcmseg.token");
    const counts = [];
    for (const t of thresholds) {
        const url = source.tilesUrl + source.maxLevel + "/0_0.png?threshold=" + t;
        const response = await fetch(url, {headers: {Authorization: "Bearer " + token}});
        const bitmap = await createImageBitmap(await response.blob());
        const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
        const context = canvas.getContext("2d");
        context.drawImage(bitmap, 0, 0);
        const data = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
        let inside = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inside++;
        counts.push([inside, bitmap.width * bitmap.height]);
    }
    return counts;
}"""


def _wait_until(page: Page, predicate: str, *, timeout: float = 30_000) -> None:
    """Poll the JavaScript function ``predicate`` until it returns true. (``wait_for_function`` compiles its
    predicate with ``eval`` inside the page, which the service's Content Security Policy forbids.)"""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(predicate):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout / 1000:.0f} s waiting for {predicate}")
        page.wait_for_timeout(100)


def _percent(text: str) -> float:
    match = re.search(r"(\d+\.\d+)%", text)
    assert match, text
    return float(match.group(1))


def _move_the_threshold(page: Page, network: NetworkLog) -> None:
    """The slider redraws the mask at once (tiles at the new threshold) and the area from the histogram
    (no request per move); the regions at that threshold download as a file; then back to the job's."""
    slider = page.get_by_label("Mask threshold")
    assert slider.input_value() == "0.3"
    area = page.locator("#threshold-area")
    area.filter(has_text="Aspecific area at 0.30:").wait_for()
    summary_area = page.locator("#summary-list dd").first.inner_text()
    assert _percent(area.inner_text()) == _percent(summary_area)  # the histogram agrees with the job
    requests_before = len(network.requests)
    slider.fill("0")
    assert page.locator("#threshold-value").inner_text() == "0.00"
    area.filter(has_text="Aspecific area at 0.00:").wait_for()
    assert _percent(area.inner_text()) >= 100.0 > _percent(summary_area)  # every pixel is >= 0
    _wait_until(page, "() => rcmseg.stats.maskThreshold === 0 && rcmseg.viewer.world.getItemCount() === 3")
    _wait_until(page, LAYERS_LOADED)
    assert page.get_by_label("Fill", exact=True).is_checked()
    assert _item_state(page, 2) == {"url": _item_state(page, 2)["url"], "opacity": pytest.approx(0.45)}
    asked = network.requests[requests_before:]
    assert any(re.search(r"/mask_files/\d+/\d+_\d+\.png\?threshold=0$", url) for url in asked), asked
    assert not any("histogram" in url or "heatmap_files" in url for url in asked), asked
    (at_job, _), (at_zero, total_zero) = page.evaluate(MASK_PIXELS, [0.3, 0])
    assert at_zero == total_zero and at_job < at_zero, (at_job, at_zero)

    with page.expect_download() as download:
        page.get_by_role("button", name="Regions (GeoJSON) at this threshold").click()
    assert download.value.suggested_filename.endswith("-regions-at-0.00.geojson")
    everything = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert len(everything["features"]) == 1  # at threshold 0 the whole image is one region

    page.get_by_role("button", name="Back to the job's threshold").click()
    _wait_until(page, "() => rcmseg.stats.maskThreshold === 0.3 && rcmseg.viewer.world.getItemCount() === 3")
    area.filter(has_text="Aspecific area at 0.30:").wait_for()


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
        # The mosaic shows as soon as its pyramid is ready (built in the background), before any job.
        _wait_until(
            page,
            "() => rcmseg.stats.previewed !== null && rcmseg.viewer.world.getItemCount() === 1",
            timeout=60_000,
        )
        assert page.locator("#stage-empty").is_hidden()

        # 0.5 um/px against the tiny model's 2 um/px: a 256 x 256 px processing image, a few seconds on CPU.
        page.get_by_label("Step (px)").fill("16")
        page.get_by_label("Threshold", exact=True).fill("0.3")
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
        _wait_until(page, LAYERS_LOADED, timeout=30_000)
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

        _move_the_threshold(page, network)

        # Zoom and pan with the keyboard, then back home for the screenshot.
        zoom = "rcmseg.viewer.viewport.getZoom(true)"
        home_zoom = page.evaluate(
            "rcmseg.viewer.viewport.getHomeZoom()"
        )  # the panel may have resized the view
        page.locator("#osd .openseadragon-canvas[tabindex='0']").focus()
        for key in ("Equal", "ArrowLeft"):  # OpenSeadragon zooms and pans while a key is held
            page.keyboard.down(key)
            page.wait_for_timeout(300)
            page.keyboard.up(key)
        _wait_until(page, f"() => {zoom} > {home_zoom} * 1.05")
        page.wait_for_timeout(300)
        page.keyboard.press("0")  # home
        _wait_until(page, f"() => Math.abs({zoom} / {home_zoom} - 1) < 0.01")
        slider.fill("0.6")
        _wait_until(page, LAYERS_LOADED)
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
