"""Every network call of a job has a shape known in advance, whatever the mosaic's size: the stem's inputs
are recorded with a forward pre-hook over whole jobs on mosaics of several sizes, in each mode."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch
from torch import nn

from worker.engine.device import RunOptions
from worker.engine.pipeline import segment_mosaic
from worker.engine.predictor import Predictor
from worker.io.checkpoint import LoadedModel, load_model
from worker.params import SegmentParams

BATCH = 8


@contextmanager
def stem_inputs(net: nn.Module) -> Iterator[set[tuple[int, ...]]]:
    """The input shapes of the network's first convolution while the block runs."""
    stem = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    seen: set[tuple[int, ...]] = set()
    handle = stem.register_forward_pre_hook(lambda _m, args: seen.add(tuple(args[0].shape)))
    try:
        yield seen
    finally:
        handle.remove()


def mosaic(path: Path, h: int, w: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(110, 40, (h, w)), 1, 255).astype(np.uint8)
    pixels[:, : w // 7] = 0  # a margin outside the scanned area: skipped windows
    pyvips.Image.new_from_array(pixels).tiffsave(str(path), tile=True)
    return path


def job_shapes(
    model: LoadedModel, tmp: Path, size: tuple[int, int], params: SegmentParams
) -> set[tuple[int, ...]]:
    src = mosaic(tmp / f"m-{size[0]}x{size[1]}.tif", *size, seed=sum(size))
    out = tmp / f"out-{params.mode}-{params.cam}-{size[0]}x{size[1]}"
    with stem_inputs(model.net) as seen:
        segment_mosaic(src, model, out, params=params, options=RunOptions(batch_size=BATCH, workdir=str(tmp)))
    return seen


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> LoadedModel:
    return load_model(tiny_model_dir)


@pytest.mark.parametrize("cam", ["cam", "scorecam"])
def test_exact_and_scorecam_jobs_run_the_batch_or_a_power_of_two(
    tmp_path: Path, model: LoadedModel, cam: str
) -> None:
    params = SegmentParams(step=16, sigma=20.0, cam=cam, scorecam_top_k=3, downsample=1)  # type: ignore[arg-type]
    mode = "exact" if cam == "cam" else "scorecam"
    known = Predictor.for_model(model, precision="fp32", batch_size=BATCH).input_shapes(mode)
    assert known == {(b, 1, 64, 64) for b in (1, 2, 4, 8)}
    sizes = [(97, 131), (150, 90), (203, 177)] if cam == "cam" else [(80, 100), (96, 71)]
    seen_all: set[tuple[int, ...]] = set()
    for size in sizes:
        seen = job_shapes(model, tmp_path, size, params)
        assert seen and seen <= known, (size, seen)
        seen_all |= seen
    assert len(seen_all) > 1  # the mosaics' last batches are short, and padded to a power of two


def test_dense_jobs_run_one_tile_shape(tmp_path: Path, model: LoadedModel) -> None:
    params = SegmentParams(mode="dense", sigma=20.0, downsample=1)  # type: ignore[arg-type]
    predictor = Predictor.for_model(model, precision="fp32", batch_size=BATCH)
    crops = {(b, 1, 64, 64) for b in (1, 2, 4, 8)}  # the window crops that give the probabilities
    assert predictor.input_shapes("dense") == {(1, 1, 2048, 2048)} | crops
    for size in [(2100, 2200), (2400, 2150)]:  # more than one tile: every tile has the tile shape
        seen = job_shapes(model, tmp_path, size, params)
        assert (1, 1, 2048, 2048) in seen and seen <= {(1, 1, 2048, 2048)} | crops, seen
    small = job_shapes(model, tmp_path, (300, 250), params)  # smaller than a tile: one tile, the image
    assert predictor.input_shapes("dense", (300, 250)) == {(1, 1, 320, 256)} | crops
    assert (1, 1, 320, 256) in small and small <= {(1, 1, 320, 256)} | crops, small


def test_warm_up_runs_every_shape_of_every_mode(model: LoadedModel) -> None:
    predictor = Predictor.for_model(model, precision="fp32", batch_size=4, resident=True)
    with stem_inputs(model.net) as seen:
        seconds = predictor.warm_up()
    expected = {(b, 1, 64, 64) for b in (1, 2, 4)} | {(1, 1, 2048, 2048)}
    assert seen == expected and seconds > 0 and predictor.warm == {"exact", "dense", "scorecam"}


def test_a_predictor_is_made_once_and_sets_up_its_process(model: LoadedModel) -> None:
    from worker.engine import device

    first = Predictor.for_model(model, precision="fp32", batch_size=BATCH)
    assert Predictor.for_model(model, precision="fp32", batch_size=BATCH) is first
    assert Predictor.for_model(model, precision="bf16", batch_size=BATCH) is not first
    assert "cpu" in device._PREPARED and first.device == torch.device("cpu") and not first.resident
