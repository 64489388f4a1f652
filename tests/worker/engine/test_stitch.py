"""The stitcher with fake window outputs: no network involved."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.method import Sigma
from worker.engine.accumulate import stitch_windows
from worker.engine.network_pass import WindowBatch
from worker.engine.stitch import ArraySink, FileSink, StripStitcher, gaussian_weights
from worker.engine.windows import WindowGrid


def fake_batches(
    grid: WindowGrid, prob_of, map_value: float = 1.0, batch: int = 3, h: int = 4
) -> list[WindowBatch]:
    """Constant maps and a chosen probability per window, in raster order, split into batches."""
    corners = [(y, x) for y in grid.ys.tolist() for x in grid.xs.tolist()]
    out = []
    for i in range(0, len(corners), batch):
        part = corners[i : i + batch]
        ys = np.array([c[0] for c in part])
        xs = np.array([c[1] for c in part])
        prob = torch.tensor([prob_of(y, x) for y, x in part], dtype=torch.float32)
        maps = torch.full((len(part), h, h), map_value)
        out.append(WindowBatch(ys=ys, xs=xs, prob=prob, maps=maps))
    return out


def stitch(
    grid: WindowGrid, batches: list[WindowBatch], sigma: Sigma, tmp: Path, budget: int = 1 << 30
) -> np.ndarray:
    heat, _ = stitch_windows(batches, grid=grid, sigma=sigma, budget_bytes=budget, workdir=tmp)
    return heat


@pytest.mark.parametrize("sigma", ["none", 7.5])
def test_constant_map_gives_heat_equal_to_p(tmp_path: Path, sigma: Sigma) -> None:
    grid = WindowGrid(height=70, width=90, window=32, step=11)
    heat = stitch(grid, fake_batches(grid, lambda y, x: 0.625), sigma, tmp_path)
    assert heat.shape == (70, 90)
    np.testing.assert_allclose(heat, 0.625, atol=1e-6)


def test_uniform_weights_average_the_covering_windows(tmp_path: Path) -> None:
    grid = WindowGrid(height=32, width=48, window=32, step=10)  # xs = 0, 10, 16
    probs = {0: 0.2, 10: 0.5, 16: 0.9}
    heat = stitch(grid, fake_batches(grid, lambda y, x: probs[x]), "none", tmp_path)
    assert heat[5, 5] == pytest.approx(0.2, abs=1e-6)  # window at x=0 only
    assert heat[5, 12] == pytest.approx((0.2 + 0.5) / 2, abs=1e-6)
    assert heat[5, 20] == pytest.approx((0.2 + 0.5 + 0.9) / 3, abs=1e-6)
    assert heat[5, 41] == pytest.approx((0.5 + 0.9) / 2, abs=1e-6)
    assert heat[5, 45] == pytest.approx(0.9, abs=1e-6)


def test_gaussian_weights_match_the_formula_at_chosen_pixels(tmp_path: Path) -> None:
    s, sigma = 32, 6.0
    grid = WindowGrid(height=32, width=48, window=s, step=10)
    probs = {0: 0.2, 10: 0.5, 16: 0.9}
    heat = stitch(grid, fake_batches(grid, lambda y, x: probs[x]), sigma, tmp_path)

    def g(u: float, v: float) -> float:
        c = (s - 1) / 2
        return float(np.exp(-((u - c) ** 2 + (v - c) ** 2) / (2 * sigma**2)))

    for y, x in [(3, 12), (20, 20), (31, 47), (0, 0)]:
        num = den = 0.0
        for x0, p in probs.items():
            if x0 <= x < x0 + s:
                w = g(y, x - x0)
                num += w * p
                den += w
        assert heat[y, x] == pytest.approx(num / den, rel=1e-5), (y, x)


def test_gaussian_is_separable_and_centred() -> None:
    g = gaussian_weights(9, 2.0)
    assert g.shape == (9, 9)
    assert g[4, 4] == pytest.approx(1.0)
    np.testing.assert_allclose(g, g.T)
    assert g[0, 4] == pytest.approx(np.exp(-16 / 8))


def test_small_image_is_padded_and_cropped_back(tmp_path: Path) -> None:
    grid = WindowGrid(height=20, width=25, window=32, step=8)
    heat = stitch(grid, fake_batches(grid, lambda y, x: 0.4), 5.0, tmp_path)
    assert heat.shape == (20, 25)
    np.testing.assert_allclose(heat, 0.4, atol=1e-6)


def test_uncovered_pixels_are_zero(tmp_path: Path) -> None:
    grid = WindowGrid(height=32, width=64, window=32, step=32)  # xs = 0, 32
    batches = [b for b in fake_batches(grid, lambda y, x: 0.8, batch=1) if b.xs[0] == 32]
    heat = stitch(grid, batches, "none", tmp_path)
    assert (heat[:, :32] == 0).all()
    np.testing.assert_allclose(heat[:, 32:], 0.8, atol=1e-6)


def test_disk_sink_equals_memory_sink(tmp_path: Path) -> None:
    grid = WindowGrid(height=90, width=70, window=32, step=9)
    rng = np.random.default_rng(0)
    probs = {(int(y), int(x)): float(rng.random()) for y in grid.ys for x in grid.xs}
    batches = fake_batches(grid, lambda y, x: probs[(y, x)])
    in_memory = stitch(grid, batches, 4.0, tmp_path)
    on_disk = stitch(grid, batches, 4.0, tmp_path, budget=16)
    assert isinstance(on_disk, np.memmap)
    np.testing.assert_array_equal(in_memory, on_disk)


def test_sinks_share_one_interface(tmp_path: Path) -> None:
    for sink in (ArraySink(4, 3), FileSink(4, 3, tmp_path)):
        stitcher = StripStitcher(height=4, width=3, window=2, sigma="none", sink=sink)
        stitcher.add(torch.ones(1, 1, 1), torch.tensor([0.5]), np.array([0]), np.array([0]))
        heat = stitcher.finish()
        assert heat[0, 0] == pytest.approx(0.5)
        assert heat[3, 2] == 0


@pytest.mark.parametrize("sigma", ["none", 9.0])
def test_one_add_per_batch_equals_window_by_window(sigma: Sigma) -> None:
    """The GPU's one index_add per batch (run here on the CPU) against the per-window adds, on overlapping
    windows of several rows and a flush last column, and both against a float64 reference."""
    grid = WindowGrid(height=70, width=83, window=32, step=12)
    rng = np.random.default_rng(5)
    batches = fake_batches(grid, lambda y, x: float(rng.uniform(0.1, 1.0)), batch=7)
    for batch in batches:
        batch.maps.copy_(torch.from_numpy(rng.uniform(0, 1, tuple(batch.maps.shape)).astype(np.float32)))
    heats = []
    for one_add in (True, False):
        sink = ArraySink(grid.height, grid.width)
        stitcher = StripStitcher(
            height=grid.height, width=grid.width, window=32, sigma=sigma, sink=sink, one_add=one_add
        )
        for batch in batches:
            stitcher.add(batch.maps, batch.prob, batch.ys, batch.xs)
            stitcher.flush_until(int(batch.ys[-1]))
        heats.append(stitcher.finish())
    np.testing.assert_allclose(heats[0], heats[1], rtol=1e-5, atol=1e-6)
    w = gaussian_weights(32, sigma).astype(np.float64)
    num = np.zeros((grid.height, grid.width))
    den = np.zeros((grid.height, grid.width))
    for batch in batches:
        up = torch.nn.functional.interpolate(batch.maps[:, None], size=(32, 32), mode="bilinear")[:, 0]
        for i, (y, x) in enumerate(zip(batch.ys.tolist(), batch.xs.tolist(), strict=True)):
            num[y : y + 32, x : x + 32] += w * float(batch.prob[i]) * up[i].double().numpy()
            den[y : y + 32, x : x + 32] += w
    np.testing.assert_allclose(heats[0], num / den, rtol=1e-5, atol=1e-6)
