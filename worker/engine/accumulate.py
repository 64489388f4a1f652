"""The second half of an exact pass: window batches accumulated into Gaussian-weighted heatmaps.

``stitch_windows`` (one sigma) and ``stitch_many`` (several sigmas from one pass, the reuse a Table 2 sweep
needs) take the batches :func:`worker.engine.network_pass.run_windows` yields.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from models.cam.classic import upsample_maps
from models.method import Sigma
from worker.engine.network_pass import WindowBatch, WindowStats
from worker.engine.stitch import ArraySink, StripStitcher, SumsSink, make_sink
from worker.engine.windows import WindowGrid


def stitch_many(
    batches: Iterable[WindowBatch],
    *,
    grid: WindowGrid,
    sigmas: Sequence[Sigma],
    budget_bytes: int,
    workdir: Path,
    stats: WindowStats | None = None,
    device: torch.device | str = "cpu",
    sums: SumsSink | None = None,
) -> list[tuple[np.ndarray, int]]:
    """Gaussian-weighted average of p x map over the grid for each sigma; each heatmap with its covered
    pixel count. The memory budget is shared by the sigmas.

    The rolling bands of accumulators live on ``device`` (the GPU when the network runs there), so maps
    never leave the device before they are weighted and summed; only finished rows are copied back. Each
    batch's maps are upsampled once, whatever the number of sigmas. With ``sums`` (one sigma only) the
    finished rows go there undivided (:mod:`worker.engine.bands`) and the heatmap returned is empty.
    """
    if not sigmas:
        raise ValueError("at least one sigma is needed")
    if sums is not None and len(sigmas) != 1:
        raise ValueError("weighted sums are kept for one sigma only")
    share = max(1, budget_bytes // len(sigmas))
    stitchers = [
        StripStitcher(
            height=grid.height,
            width=grid.width,
            window=grid.window,
            sigma=sigma,
            sink=make_sink(grid.height, grid.width, budget_bytes=share, workdir=workdir)
            if sums is None
            else ArraySink(0, grid.width),
            device=device,
            sums=sums,
        )
        for sigma in sigmas
    ]
    seconds = 0.0
    for batch in batches:
        t0 = time.perf_counter()
        if len(batch.ys):
            maps = upsample_maps(batch.maps.to(device, torch.float32), grid.window)
            for stitcher in stitchers:
                stitcher.add(maps, batch.prob, batch.ys, batch.xs)
                stitcher.flush_until(int(batch.ys[-1]))
        seconds += time.perf_counter() - t0
    t0 = time.perf_counter()
    heats = [(stitcher.finish(), stitcher.covered_pixels) for stitcher in stitchers]
    seconds += time.perf_counter() - t0
    if stats is not None:
        stats.seconds["stitch"] += seconds
    return heats


def stitch_windows(
    batches: Iterable[WindowBatch],
    *,
    grid: WindowGrid,
    sigma: Sigma,
    budget_bytes: int,
    workdir: Path,
    stats: WindowStats | None = None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, int]:
    """The heatmap of one sigma and its covered pixel count (:func:`stitch_many` with one sigma)."""
    (result,) = stitch_many(
        batches,
        grid=grid,
        sigmas=[sigma],
        budget_bytes=budget_bytes,
        workdir=workdir,
        stats=stats,
        device=device,
    )
    return result
