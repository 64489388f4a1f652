"""The processing image read strip by strip: the same pixels as a whole read, windows cut from its first
strips while later ones are still being read, a damaged file's error raised where the rows are asked for."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch

from worker.engine.source import iter_pixel_batches, resident_batches, row_keep
from worker.engine.windows import WindowGrid
from worker.errors import ExportFailed, UnreadableMosaic
from worker.io import processing
from worker.io.mosaic import Mosaic, open_mosaic
from worker.io.processing import ReadStopped, StreamedImage, processing_image, stream_processing_image

LIMIT = 10**8


def _mosaic_png(path: Path, height: int = 1203, width: int = 917) -> Path:
    pixels = np.random.default_rng(0).integers(0, 255, (height, width), dtype=np.uint8)
    pixels[:, : width // 3] = 0  # a margin outside the scanned area
    pyvips.Image.new_from_array(pixels).pngsave(str(path))
    return path


@pytest.mark.parametrize("budget", [LIMIT, 1], ids=["in memory", "memory-mapped"])
@pytest.mark.parametrize("sequential", [True, False], ids=["sequential", "random access"])
def test_strips_give_the_pixels_of_a_whole_read(tmp_path: Path, budget: int, sequential: bool) -> None:
    path = _mosaic_png(tmp_path / "m.png")
    mosaic = open_mosaic(path, max_pixels=LIMIT, sequential=sequential)
    streamed = stream_processing_image(mosaic, 3, budget_bytes=budget, workdir=tmp_path)
    try:
        got = np.array(streamed.whole())
    finally:
        streamed.close()
    whole = pyvips.Image.new_from_file(str(path)).crop(0, 0, 915, 1203).shrink(3, 3).numpy()
    assert got.shape == (401, 305) and streamed.shape == (401, 305)
    np.testing.assert_array_equal(got, whole)
    assert isinstance(streamed.array, np.memmap) == (budget == 1)
    np.testing.assert_array_equal(processing_image(mosaic, 3, budget_bytes=budget, workdir=tmp_path), whole)


def test_a_truncated_png_fails_where_its_rows_are_asked_for(tmp_path: Path) -> None:
    whole = _mosaic_png(tmp_path / "whole.png")
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    streamed = stream_processing_image(
        open_mosaic(cut, max_pixels=LIMIT, sequential=True), 1, budget_bytes=LIMIT, workdir=tmp_path
    )
    try:
        streamed.rows(64)  # the top of the file is there
        with pytest.raises(UnreadableMosaic, match="damaged or truncated") as info:
            streamed.whole()
    finally:
        streamed.close()
    assert str(cut) in str(info.value)


class GatedRegion:
    """A libvips region whose strips below ``open_rows`` wait for ``gate``: the reader is held there."""

    def __init__(
        self, region: pyvips.Region, gate: threading.Event, open_rows: int, held: threading.Event
    ) -> None:
        self.region, self.gate, self.open_rows, self.held = region, gate, open_rows, held

    def fetch(self, left: int, top: int, width: int, height: int) -> bytes:
        if top + height > self.open_rows:
            self.held.set()
            assert self.gate.wait(timeout=60), "the test never opened the gate"
        return bytes(self.region.fetch(left, top, width, height))


@pytest.fixture
def gated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[StreamedImage, threading.Event, threading.Event]]:
    """A 600 x 400 processing image whose reader stops after its first 256 rows until the gate opens; the
    image, the gate, and the event set once the reader is held there."""
    gate, held = threading.Event(), threading.Event()
    regions: list[GatedRegion] = []
    region_of = pyvips.Region.new

    def new(image: pyvips.Image) -> GatedRegion:
        regions.append(GatedRegion(region_of(image), gate, open_rows=256, held=held))
        return regions[-1]

    pixels = np.random.default_rng(1).integers(1, 255, (600, 400), dtype=np.uint8)
    mosaic = Mosaic(image=pyvips.Image.new_from_array(pixels), header=None, source=tmp_path / "m")  # type: ignore[arg-type]
    monkeypatch.setattr(processing.pyvips.Region, "new", staticmethod(new))
    streamed = stream_processing_image(mosaic, 1, budget_bytes=LIMIT, workdir=tmp_path)
    try:
        yield streamed, gate, held
    finally:
        gate.set()
        streamed.close()
    assert len(regions) == 1 and held.is_set()


@pytest.mark.parametrize("cut", ["host", "device"])
def test_windows_are_cut_from_the_first_strips_while_the_rest_is_read(
    gated: tuple[StreamedImage, threading.Event, threading.Event], cut: str
) -> None:
    """The first window row's batch comes out while the reader is held below row 256; opening the gate
    lets the rest through, and every batch equals the one cut from the whole image."""
    streamed, gate, _ = gated
    grid = WindowGrid(height=600, width=400, window=256, step=64)

    def batches(image: np.ndarray | StreamedImage) -> Iterator[object]:
        if cut == "host":
            return iter_pixel_batches(image, grid, 3)
        return resident_batches(image, grid, 3, device=torch.device("cpu"))

    streaming = batches(streamed)
    first = next(streaming)
    assert not gate.is_set() and streamed.rows(0) is streamed.array
    assert streamed._ready < 600  # the reader has not got past the gate
    gate.set()
    got = [first, *streaming]
    want = list(batches(streamed.whole()))
    assert len(got) == len(want) == 10  # 7 window rows x 4 columns, 3 a batch
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a.ys, b.ys)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(a.xs, b.xs)  # type: ignore[attr-defined]
        torch.testing.assert_close(a.pixels, b.pixels)  # type: ignore[attr-defined]


def test_the_column_test_finds_exactly_the_windows_with_a_nonzero_pixel() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        strip = np.zeros((32, 300), dtype=np.uint8)
        for _ in range(rng.integers(0, 4)):
            y, x = rng.integers(0, 32), rng.integers(0, 300)
            strip[y, x] = rng.integers(1, 255)
        xs = np.arange(0, 300 - 32 + 1, 7)
        brute = np.array([strip[:, x : x + 32].max() > 0 for x in xs])
        np.testing.assert_array_equal(row_keep(strip, xs, 32), brute)


def test_closing_wakes_a_caller_still_waiting_for_rows(
    gated: tuple[StreamedImage, threading.Event, threading.Event],
) -> None:
    """A job stopped while the window cutter waits for rows (a cancel, a network error) closes the image:
    the waiting call ends with ReadStopped instead of waiting for good."""
    streamed, gate, held = gated
    assert held.wait(timeout=60)  # the reader is at the gate, below row 256
    outcome: list[BaseException | np.ndarray] = []

    def wait_for_all() -> None:
        try:
            outcome.append(streamed.whole())
        except BaseException as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_for_all)
    waiter.start()
    closer = threading.Thread(target=streamed.close)
    closer.start()  # the reader is held at the gate: close() waits for it to finish its strip
    gate.set()
    closer.join(timeout=60)
    waiter.join(timeout=60)
    assert not closer.is_alive() and not waiter.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], ReadStopped), outcome
    assert "closed before row 600" in str(outcome[0])


def test_a_processing_image_that_does_not_fit_the_disk_fails_before_reading(
    small_disk: Callable[[int], Path], tmp_path: Path
) -> None:
    """The raw file's space is taken first: a full scratch disk is an error naming the lack of space, not a
    bus error on a page of a mapping halfway through the windows."""
    path = _mosaic_png(tmp_path / "m.png", 1500, 1500)
    scratch = small_disk(1024**2)
    mosaic = open_mosaic(path, max_pixels=LIMIT, sequential=True)
    with pytest.raises(ExportFailed, match="not enough space") as info:
        stream_processing_image(mosaic, 1, budget_bytes=1, workdir=scratch)
    assert str(scratch) not in str(info.value)
    assert not [t for t in threading.enumerate() if t.name == "image-reader"]
