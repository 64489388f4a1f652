"""Dense mode's tiles: the halo keeps tile seams out of the features, and the image edge needs none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worker.engine.dense_tiles import (
    STRIDE,
    DenseOptions,
    DenseWindows,
    cam_grid,
    core_ranges,
    crop_logits,
    interpolate_logits,
    pad_to_cells,
)
from worker.engine.network_pass import WindowStats
from worker.engine.predictor import Predictor
from worker.engine.windows import WindowGrid
from worker.io.checkpoint import LoadedModel, load_model
from worker.params import SegmentParams


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 255, size=(STRIDE * 22, STRIDE * 25), dtype=np.uint8)  # wider than 3 + 2 x 8 cells


def _grid(image: np.ndarray, model_dir: Path, **options: int) -> torch.Tensor:
    model = load_model(model_dir)
    return cam_grid(image, model, dtype=torch.float32, options=DenseOptions(**options))


def test_tiles_with_a_wide_halo_equal_one_pass(image: np.ndarray, tiny_model_dir: Path) -> None:
    whole = _grid(image, tiny_model_dir, tile_cells=100, halo_cells=0)
    tiled = _grid(image, tiny_model_dir, tile_cells=3, halo_cells=8)
    assert whole.shape == tiled.shape == (22, 25)
    scale = float(whole.abs().max())
    assert float((whole - tiled).abs().max()) < 1e-4 * scale


def test_an_axis_that_fits_one_tile_with_its_halo_is_one_tile(
    image: np.ndarray, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = DenseOptions()
    span = options.tile_cells + 2 * options.halo_cells
    assert core_ranges(55, options) == [(0, 55)]  # a 1750 px phantom
    assert core_ranges(span, options) == [(0, span)]
    assert core_ranges(span + 1, options) == [(0, 48), (48, span + 1)]
    assert core_ranges(94, options) == [(0, 48), (48, 94)]  # a 12k mosaic's 3000 px processing image
    model = load_model(tiny_model_dir)
    calls: list[tuple[int, ...]] = []
    forward = model.net.forward_features
    monkeypatch.setattr(model.net, "forward_features", lambda x: calls.append(tuple(x.shape)) or forward(x))
    wide = DenseOptions(tile_cells=20, halo_cells=3)  # 22 x 25 cells: one tile of 26 cells and its halo
    cam_grid(image, model, dtype=torch.float32, options=wide)
    assert calls == [(1, 1, 22 * STRIDE, 25 * STRIDE)]
    calls.clear()
    cam_grid(image, model, dtype=torch.float32, options=DenseOptions(tile_cells=10, halo_cells=2))
    assert len(calls) == 3 * 3 and set(calls) == {(1, 1, 14 * STRIDE, 14 * STRIDE)}


def test_tiles_without_a_halo_show_their_seams(image: np.ndarray, tiny_model_dir: Path) -> None:
    whole = _grid(image, tiny_model_dir, tile_cells=100, halo_cells=0)
    seams = _grid(image, tiny_model_dir, tile_cells=3, halo_cells=0)
    assert float((whole - seams).abs().max()) > 1e-3 * float(whole.abs().max())


def test_crop_probabilities_are_the_exact_pass_at_the_coarse_grid(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    rng = np.random.default_rng(5)
    image = rng.integers(1, 255, size=(STRIDE * 9, STRIDE * 11), dtype=np.uint8)
    image[:, : STRIDE * 3] = 0  # empty windows, skipped by both passes
    padded = pad_to_cells(image, model.card.window)
    step = 2 * STRIDE
    ys, xs, logits = crop_logits(padded, model, step=step, dtype=torch.float32, batch_size=4)

    grid = WindowGrid(height=padded.shape[0], width=padded.shape[1], window=model.card.window, step=step)
    predictor = Predictor.for_model(model, precision="fp32", batch_size=4)
    exact = {
        (int(y), int(x)): float(p)
        for batch in predictor.windows(
            padded, grid=grid, params=SegmentParams(step=step), stats=WindowStats(), on_device=False
        )
        for y, x, p in zip(batch.ys, batch.xs, batch.prob, strict=True)
    }
    assert exact and len(exact) < logits.numel()  # some windows are empty
    for (y, x), prob in exact.items():
        got = torch.sigmoid(logits[np.searchsorted(ys, y), np.searchsorted(xs, x)])
        assert float(got) == pytest.approx(prob, abs=1e-6)
    assert int(torch.isnan(logits).sum()) == logits.numel() - len(exact)


def test_logit_interpolation_is_exact_at_the_nodes_and_linear_between() -> None:
    ys, xs = np.array([0, 64, 128, 160]), np.array([0, 64, 96])
    logits = torch.tensor(np.random.default_rng(1).normal(0, 3, (4, 3)), dtype=torch.float32)
    out_ys, out_xs = np.arange(6) * STRIDE, np.arange(4) * STRIDE
    dense = interpolate_logits(ys, xs, logits, out_ys, out_xs)
    assert dense.shape == (6, 4)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            assert float(dense[y // STRIDE, x // STRIDE]) == pytest.approx(float(logits[i, j]), abs=1e-5)
    middle = (logits[0, 0] + logits[1, 0]) / 2  # y = 32, halfway between the first two rows
    assert float(dense[1, 0]) == pytest.approx(float(middle), abs=1e-5)


def _without_crops(
    model: LoadedModel, cells: int, seed: int
) -> tuple[np.ndarray, torch.Tensor, DenseWindows]:
    """A random image of ``cells`` x ``cells`` cells (padded), its cell grid, and its dense windows with
    the dense features' own probabilities."""
    image = np.random.default_rng(seed).integers(1, 255, size=(STRIDE * cells,) * 2, dtype=np.uint8)
    padded = pad_to_cells(image, model.card.window)
    cam = cam_grid(padded, model, dtype=torch.float32, options=DenseOptions())
    own = DenseWindows.from_cam_grid(cam, padded, model, image.shape, options=DenseOptions(prob_step=None))
    return padded, cam, own


def test_dense_windows_take_their_probabilities_from_the_crops(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    padded, cam, own = _without_crops(model, 8, seed=7)
    every = DenseOptions(prob_step=STRIDE)
    crops = DenseWindows.from_cam_grid(cam, padded, model, padded.shape, options=every, batch_size=4)
    # with crops at every window position the probabilities are the exact pass's, not the dense ones
    _, _, logits = crop_logits(padded, model, step=STRIDE, dtype=torch.float32, batch_size=4)
    assert torch.allclose(crops.prob, torch.sigmoid(logits), atol=1e-6)
    assert not torch.allclose(own.prob, crops.prob, atol=1e-4)
    assert torch.equal(own.lo, crops.lo) and torch.equal(own.hi, crops.hi)


def test_crop_offsets_correct_the_dense_logits_between_crops(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    padded, cam, own = _without_crops(model, 12, seed=8)
    step = 2 * STRIDE
    offsets = DenseOptions(prob_step=step, prob_offset=True)
    windows = DenseWindows.from_cam_grid(cam, padded, model, padded.shape, options=offsets, batch_size=4)
    ys, xs, logits = crop_logits(padded, model, step=step, dtype=torch.float32, batch_size=4)
    dense, corrected = torch.logit(own.prob.double()), torch.logit(windows.prob.double())
    nodes = np.ix_(ys // STRIDE, xs // STRIDE)
    # at a crop the window's logit is the crop's own; halfway between two crops, the dense logit there
    # moved by the mean of the two crops' corrections
    assert torch.allclose(corrected[nodes], logits.double(), atol=1e-4)
    offset = logits.double() - dense[nodes]
    halfway = dense[1, 0] + (offset[0, 0] + offset[1, 0]) / 2
    assert float(corrected[1, 0]) == pytest.approx(float(halfway), abs=1e-4)
    assert not torch.allclose(corrected[1, 0], (logits[0, 0] + logits[1, 0]).double() / 2, atol=1e-3)


def test_the_dense_engine_settings_are_in_a_dense_results_identity_and_provenance() -> None:
    from worker.engine.summary import method_provenance
    from worker.params import DENSE_IDENTITY

    dense = SegmentParams(mode="dense", sigma=20.0)  # type: ignore[arg-type]
    options = DenseOptions()
    assert {
        "dense_tile_cells": options.tile_cells,
        "dense_prob_step": options.prob_step,
        "dense_prob": "crop offsets" if options.prob_offset else "crops",
    } == DENSE_IDENTITY
    assert dense.identity().items() >= DENSE_IDENTITY.items()
    assert not SegmentParams(sigma=20.0).identity().keys() & DENSE_IDENTITY.keys()
    provenance = method_provenance(dense, 0.5)
    assert provenance["dense_prob_step"] == {"value": options.prob_step, "source": "engine"}
    assert provenance["dense_tile_cells"] == {"value": options.tile_cells, "source": "engine"}
    assert not method_provenance(SegmentParams(sigma=20.0), 0.5).keys() & DENSE_IDENTITY.keys()
