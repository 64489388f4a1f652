"""The viewer page end to end, in headless Chromium against the real API and a real worker.

A person's path through the page: sign in (a wrong token first), upload the real RCM tile, choose the
parameters, follow the job to ``finished``, open it, and look at the mosaic with its heatmap and mask;
then, on a window of 800 x 1000, an error banner, the same parameters again (the earlier result, said so)
and a job with the model's defaults. Screenshots go to ``test-artifacts/``; with ``RCMSEG_UPDATE_DOCS=1``
the narrow one also to ``docs/viewer-narrow.png``. (``docs/viewer.png`` shows the shipped model on a
phantom: see docs/viewer.md.)
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Locator, Page, Request, Response, expect

from tests.app.conftest import TOKENS, Service, running_service
from tests.app.viewer.helpers import NetworkLog, chromium_page, require_browser_assets, watch_network
from tests.conftest import REPO

pytestmark = pytest.mark.slow

ARTIFACTS = REPO / "test-artifacts"
DOCS = REPO / "docs"
NARROW = {"width": 800, "height": 1000}
DESKTOP = {"width": 1280, "height": 800}
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
    with running_service(service_env, tmp_path_factory.mktemp("viewer-logs")) as svc:
        yield svc


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


def _save_screenshot(page: Page, name: str = "viewer.png", *, docs: bool = False) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    page.screenshot(path=str(shot))
    if docs and os.environ.get("RCMSEG_UPDATE_DOCS") == "1":
        shutil.copyfile(shot, DOCS / name)
    return shot


def _box(page: Page, selector: str) -> dict[str, float]:
    """The element's box in page coordinates (the window's top at scroll 0 is 0)."""
    box: dict[str, float] = page.evaluate(
        "(s) => { const r = document.querySelector(s).getBoundingClientRect();"
        " return {top: r.top + scrollY, bottom: r.bottom + scrollY, left: r.left, right: r.right,"
        " height: r.height, viewTop: r.top, viewBottom: r.bottom}; }",
        selector,
    )
    return box


def _in_view(page: Page, selector: str) -> bool:
    """Whether the element lies wholly inside the window as it is scrolled now."""
    box = _box(page, selector)
    height = page.evaluate("innerHeight")
    return bool(box["height"] > 0 and box["viewTop"] >= 0 and box["viewBottom"] <= height)


def _legend_and_scale_bar_in_window(page: Page) -> None:
    """The legend and the scale bar are visible and end inside the window at scroll 0 (no banner or panel
    pushes them down), and nothing is wider than the window."""
    height, width = page.evaluate("[innerHeight, innerWidth]")
    for selector in ("#legend", "#scalebar"):
        assert page.locator(selector).is_visible(), selector
        box = _box(page, selector)
        assert box["top"] > 0 and box["bottom"] <= height, (selector, box, height)
    assert page.evaluate("document.documentElement.scrollWidth") <= width


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


ZOOM = "rcmseg.viewer.viewport.getZoom(true) / rcmseg.viewer.viewport.getHomeZoom()"
"""The zoom now, relative to the home zoom as the page computes it now (the panel may resize the view)."""
ZOOMED_IN = f"() => {ZOOM} > 1.05"
AT_HOME = f"() => Math.abs({ZOOM} - 1) < 0.01"
VIEW_SETTLED = """() => {
    const view = rcmseg.viewer.viewport;
    return Math.abs(view.getZoom(true) - view.getZoom(false)) < 1e-9
        && view.getCenter(true).distanceTo(view.getCenter(false)) < 1e-9;
}"""
"""The viewport's spring animation has reached its target (nothing moves between two frames)."""


def _zoom_in_then_home_with_the_keyboard(page: Page) -> None:
    """``=`` zooms in and ``0`` goes home. Each press is followed by waiting for the zoom it asks for (the
    home zoom read in the page, since the panel may resize the view meanwhile), never by a fixed pause."""
    page.locator("#osd .openseadragon-canvas[tabindex='0']").focus()
    _press_until(page, "Equal", ZOOMED_IN)
    page.keyboard.press("ArrowLeft")  # pans
    _press_until(page, "0", AT_HOME)
    _wait_until(page, VIEW_SETTLED)


def _press_until(page: Page, key: str, predicate: str, *, timeout: float = 60.0) -> None:
    """Press ``key`` until ``predicate`` holds; a press a busy page missed is repeated after 5 s without
    the effect, within one bounded wait."""
    deadline = time.monotonic() + timeout
    while True:
        page.keyboard.press(key)
        retry = min(deadline, time.monotonic() + 5)
        while time.monotonic() < retry:
            if page.evaluate(predicate):
                return
            page.wait_for_timeout(100)
        if time.monotonic() >= deadline:
            pytest.fail(f"{predicate} did not hold within {timeout:.0f} s of pressing {key!r}")


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


POST_JOB = "/v1/jobs"


def _is_job_post(response: Response | Request) -> bool:
    request = response.request if isinstance(response, Response) else response
    return request.method == "POST" and request.url.endswith(POST_JOB)


def _summary(page: Page) -> dict[str, str]:
    """The result panel's summary as {term: value}."""
    rows: dict[str, str] = page.evaluate(
        "() => Object.fromEntries(Array.from(document.querySelectorAll('#summary-list dt'),"
        " (dt) => [dt.textContent, dt.nextElementSibling.textContent]))"
    )
    return rows


def _scale_bar_pixel_size(page: Page) -> float:
    """The input pixel size the scale bar is drawn at: its micrometres over the image pixels it spans."""
    size: float = page.evaluate(
        """() => {
        const label = document.getElementById("scalebar-label").textContent;
        const um = parseFloat(label) * (label.endsWith("mm") ? 1000 : 1);
        const screenPx = document.getElementById("scalebar-bar").getBoundingClientRect().width;
        const item = rcmseg.layers.mosaic;
        const a = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
        const b = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(1000, 0));
        return um / (screenPx / ((b.x - a.x) / 1000));
    }"""
    )
    return size


def _narrow_before_any_job(page: Page) -> None:
    """At 800 x 1000 before any job: the upload form first and in the first screenful, with no empty image
    box above it; nothing wider than the window."""
    page.set_viewport_size(NARROW)
    form, stage = _box(page, "#upload-form"), _box(page, ".stage")
    assert form["top"] < 250 and form["bottom"] <= NARROW["height"], form
    assert stage["top"] >= form["bottom"] and stage["height"] <= 120, (stage, form)
    assert page.evaluate("document.documentElement.scrollWidth") <= NARROW["width"]
    _save_screenshot(page, "viewer-narrow-start.png")
    page.set_viewport_size(DESKTOP)


def _error_banner(page: Page) -> None:
    """A job the service refuses: a red banner with its message, the field it names marked and focused; the
    banner stays in sight, and the legend and scale bar inside the window, on a desktop and at 800 x 1000."""
    field = page.get_by_label("Pixel size (µm)")
    field.fill("0.01")  # a downsample factor of 200: refused at submit, naming the field
    page.get_by_role("button", name="Start segmentation").click()
    alert = page.get_by_role("alert").filter(has_text="Job not started")
    alert.wait_for()
    assert field.get_attribute("aria-invalid") == "true"
    assert page.evaluate("document.activeElement.id") == "pixel-size-input"
    _legend_and_scale_bar_in_window(page)
    assert page.evaluate("document.documentElement.scrollHeight") <= DESKTOP["height"]

    page.set_viewport_size(NARROW)
    field.scroll_into_view_if_needed()  # the form is at the bottom of a narrow page
    assert _in_view(page, "#message"), _box(page, "#message")
    page.evaluate("scrollTo(0, 0)")
    _legend_and_scale_bar_in_window(page)
    _save_screenshot(page, "viewer-narrow-error.png")


def _same_parameters_again(page: Page, first_id: str) -> None:
    """At 800 x 1000, scrolled down to the form: the same parameters again bring the earlier result to the
    top of the window with a notice that stays (a poll of the list later too), and compute nothing."""
    page.get_by_label("Pixel size (µm)").fill("0.5")
    start = page.get_by_role("button", name="Start segmentation")
    start.scroll_into_view_if_needed()
    with page.expect_response(_is_job_post) as response:
        start.click()
    body = response.value.json()
    assert body["reused"] is True and body["id"] == first_id, body
    notice = page.get_by_role("status").filter(
        has_text="Already segmented with these parameters — showing the earlier result"
    )
    notice.wait_for()
    _wait_until(page, LAYERS_LOADED)
    page.wait_for_timeout(2500)  # the job list refreshes meanwhile
    assert notice.is_visible() and _in_view(page, "#message")
    assert _in_view(page, ".stage") and _in_view(page, "#result-notice")
    assert page.evaluate("rcmseg.openJobId") == first_id
    assert page.locator("#job-list li").count() == 1
    _legend_and_scale_bar_in_window(page)
    page.wait_for_timeout(800)
    _save_screenshot(page, "viewer-narrow.png", docs=True)


def _job_with_the_defaults(page: Page, defaults: dict[str, Any]) -> None:
    """Fields left empty send nothing (sigma "none" asks for plain averaging): the new job's row scrolls into
    view, and its summary says which values were the model's, that the pixel size was assumed, and why."""
    page.get_by_label("Step (px)").fill("64")
    page.get_by_label("Sigma (px)").fill("none")
    page.get_by_label("Threshold", exact=True).fill("")
    page.get_by_label("Pixel size (µm)").fill("")
    estimate = page.locator("#cost-estimate").inner_text()
    assert "16 windows of 64 px over 256 × 256 px (mosaic reduced 4×, at 0.5 µm/px assumed)" in estimate, (
        estimate
    )
    with page.expect_response(_is_job_post) as response:
        page.get_by_role("button", name="Start segmentation").click()
    sent = response.value.request.post_data_json
    assert sent["step"] == 64 and sent["sigma"] == "none", sent
    assert not {"cam", "threshold", "pixel_size_um"} & set(sent), sent
    job_id = response.value.json()["id"]
    row = page.locator(f'#job-list li[data-job-id="{job_id}"]')
    row.wait_for()
    assert _in_view(page, f'#job-list li[data-job-id="{job_id}"]')
    expect(row.locator(".badge")).to_have_text("finished", timeout=240_000)
    row.get_by_role("button", name="Open the result of rcm_tile_isic_16bit.png").click()
    _wait_until(page, LAYERS_LOADED)
    assert _in_view(page, ".stage")
    summary = _summary(page)
    assert summary["Method"] == "CAM (model's default)", summary
    assert summary["Step"] == "64 px (requested)", summary
    assert summary["Sigma"] == "none (plain averaging) (requested)", summary
    assert summary["Threshold"] == f"{defaults['threshold']:.2f} (model's default)", summary
    assert summary["Pixel size"].startswith("0.5 µm (assumed: the file records none)"), summary
    assert "0.5 µm/px was assumed" in page.locator("#result-notes").inner_text()
    assert _scale_bar_pixel_size(page) == pytest.approx(0.5, rel=1e-3)
    assert page.locator("#scalebar").get_attribute("data-note") == "pixel size assumed: 0.5 µm"


ETA_SIMULATION = """async () => {
    const { WindowRate, roundedSeconds } = await import(new URL("eta.js", document.baseURI).href);
    const total = 2000;
    const rate = new WindowRate();
    const seen = [];
    const poll = (t, done) => { rate.add(t, done); seen.push([t, done, rate.secondsLeft(total, t)]); };
    // Polls every 2 s. The first batch of 32 windows takes 12 s (warm-up), then 32 windows every 2 s (16/s)
    // up to t = 60 s, then every 4 s (8/s, another job shares the machine).
    let t = 0, done = 0;
    poll(t, done);
    for (t = 2; t <= 12; t += 2) poll(t, t === 12 ? (done = 32) : done);
    for (; t <= 60; t += 2) poll(t, (done += 32));
    for (; t <= 150; t += 2) poll(t, t % 4 === 0 ? (done += 32) : done);
    const restarted = new WindowRate();
    [[0, 0], [2, 32], [4, 64], [6, 96], [8, 128], [10, 0]].forEach(([t, d]) => restarted.add(t, d));
    return {
        seen,
        afterRestart: restarted.secondsLeft(total, 10),
        rounded: [3, 67, 152, 1234].map(roundedSeconds),
    };
}"""


def _eta_from_the_jobs_own_rate(page: Page) -> None:
    """The time left comes from this job's measured rate, smoothed, and only once it means something: never
    from the warm-up, not before 5 s and two reports, then close to the truth, following a slowdown."""
    sim = page.evaluate(ETA_SIMULATION)
    by_time = {t: (done, left) for t, done, left in sim["seen"]}
    assert all(by_time[t][1] is None for t in range(0, 18, 2)), sim["seen"][:10]  # warm-up, then < 5 s
    for t in range(18, 61, 2):  # 16 windows/s: within 5 %, the warm-up never counted
        done, left = by_time[t]
        assert left == pytest.approx((2000 - done) / 16, rel=0.05), (t, done, left)
    done, left = by_time[150]  # 90 s after the slowdown to 8 windows/s
    assert left == pytest.approx((2000 - done) / 8, rel=0.15), (done, left)
    assert sim["afterRestart"] is None  # a restarted attempt measures again
    assert sim["rounded"] == [5, 70, 150, 1260]


PIXEL_SIZES = """async (files) => {
    const { recordedPixelSizeUm } = await import(new URL("pixelsize.js", document.baseURI).href);
    const sizes = {};
    for (const [name, data] of Object.entries(files)) {
        sizes[name] = await recordedPixelSizeUm(new File([new Uint8Array(data)], name));
    }
    return sizes;
}"""


def _pixel_size_read_in_the_page(page: Page) -> None:
    """The cost estimate reads the pixel size a file records as the service does: TIFF resolution (per inch),
    OME-XML, PNG pHYs; none, or a writer's 72 dpi, is no pixel size."""
    image = Image.new("L", (8, 8), 7)
    ome = '<OME><Pixels PhysicalSizeX="750" PhysicalSizeXUnit="nm" PhysicalSizeY="750"/></OME>'
    variants = {
        "tiff-2um.tif": {"format": "TIFF", "dpi": (12700, 12700)},
        "tiff-72dpi.tif": {"format": "TIFF", "dpi": (72, 72)},
        "tiff-none.tif": {"format": "TIFF"},
        "ome.tif": {"format": "TIFF", "description": ome},
        "png-2um.png": {"format": "PNG", "dpi": (12700, 12700)},
        "png-none.png": {"format": "PNG"},
    }
    files = {}
    for name, options in variants.items():
        buffer = io.BytesIO()
        image.save(buffer, **options)
        files[name] = list(buffer.getvalue())
    sizes = page.evaluate(PIXEL_SIZES, files)
    assert sizes == {
        "tiff-2um.tif": pytest.approx(2.0),
        "tiff-72dpi.tif": None,
        "tiff-none.tif": None,
        "ome.tif": pytest.approx(0.75),
        "png-2um.png": pytest.approx(2.0, rel=1e-5),
        "png-none.png": None,
    }, sizes


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
        # The placeholders are the model's defaults; an empty field sends nothing.
        with viewer_service.client("alice") as client:
            tiny = {m["name"]: m for m in client.get("/v1/models").json()["models"]}["tiny"]
        defaults = tiny["defaults"]
        assert page.get_by_label("Step (px)").get_attribute("placeholder") == f"{defaults['step']} (default)"
        sigma = "none" if defaults["sigma"] == "none" else f"{defaults['sigma']:g}"
        assert page.get_by_label("Sigma (px)").get_attribute("placeholder") == f"{sigma} (default)"
        assert page.get_by_label("Threshold", exact=True).get_attribute("placeholder") == (
            f"{defaults['threshold']:g} (default)"
        )
        _narrow_before_any_job(page)
        _eta_from_the_jobs_own_rate(page)
        _pixel_size_read_in_the_page(page)

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
        first_id = row.get_attribute("data-job-id") or ""
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
        # The summary gives the values that ran and where each came from; the model's intended use and the
        # summary's notes stand above it.
        rows = _summary(page)
        assert rows["Method"] == "CAM (model's default)", rows
        assert rows["Step"] == "16 px (requested)", rows
        assert rows["Sigma"] == f"{sigma} px (model's default)", rows
        assert rows["Threshold"] == "0.30 (requested)", rows
        assert rows["Pixel size"] == "0.5 µm (as requested), processed at 2 µm (÷4)", rows
        notice = page.locator("#result-notice")
        assert notice.is_visible() and notice.get_by_text("Intended use:").is_visible()
        intended = page.locator("#intended-use").inner_text()
        if tiny["intended_use"]:
            assert intended.rstrip(".").lower() == tiny["intended_use"].rstrip(".").lower(), intended
        else:
            assert intended.startswith("not stated on the model's card"), intended
        assert _scale_bar_pixel_size(page) == pytest.approx(0.5, rel=1e-3)
        assert page.locator("#scalebar").get_attribute("data-note") == ""  # the pixel size was given
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
        _zoom_in_then_home_with_the_keyboard(page)
        slider.fill("0.6")
        _wait_until(page, LAYERS_LOADED)
        page.evaluate("document.activeElement.blur()")
        _wait_until(page, VIEW_SETTLED)
        _save_screenshot(page)

        _error_banner(page)
        _same_parameters_again(page, first_id)
        _job_with_the_defaults(page, defaults)
        page.set_viewport_size(DESKTOP)

        # A job far too big for this machine, canceled from the list, says so.
        page.get_by_label("Step (px)").fill("1")
        page.get_by_label("Pixel size (µm)").fill("2")
        assert "923,521 windows" in page.locator("#cost-estimate").inner_text()
        big = _start_job(page)
        assert page.locator("#job-list li").count() == 3
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
    assert network.errors == [f"422 POST {viewer_service.url}/v1/jobs"], network.errors  # the refused job
    outside = [u for u in network.requests if not u.startswith((viewer_service.url + "/", "blob:", "data:"))]
    assert outside == [], outside
