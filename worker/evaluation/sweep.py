"""Window outputs computed once and stitched for many sigmas: the reuse that makes a Table 2 sweep cheap.

Sigma changes only the stitching weights. An exact pass runs the windows once and feeds each batch to one
:class:`~worker.engine.stitch.StripStitcher` per sigma (see ``benchmarks/restitch_sweep.py``); a dense pass computes
the cell grid of W.F once and stitches it on the cell grid for each sigma.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.cam.classic import upsample_maps
from models.cam.dense import stitch_cells, window_statistics
from models.errors import InvalidParameter
from models.network import classifier_weight
from models.precision import PRECISIONS
from worker.engine.dense_tiles import STRIDE as DENSE_STRIDE
from worker.engine.dense_tiles import DenseOptions, cam_grid
from worker.engine.params import Precision, ProgressFn, SegmentParams
from worker.engine.run import WindowStats, run_windows
from worker.engine.stitch import StripStitcher, gaussian_weights, make_sink
from worker.engine.windows import WindowGrid
from worker.io.checkpoint import LoadedModel


def output_stride(model: LoadedModel) -> int:
    """Input pixels per feature-map cell of the CAM layer (32 for EfficientNet)."""
    info = getattr(model.net, "feature_info", None)
    if info:
        return int(info[-1]["reduction"])
    device = next(model.net.parameters()).device
    size = model.card.window
    with torch.inference_mode():
        feats = model.net.forward_features(  # type: ignore[operator]
            torch.zeros(1, model.card.in_chans, size, size, device=device)
        )
    return max(1, round(size / feats.shape[-1]))


def sweep_heatmaps(
    image: np.ndarray,
    model: LoadedModel,
    *,
    grid: WindowGrid,
    params: SegmentParams,
    sigmas: Sequence[float | None],
    batch_size: int,
    budget_bytes: int,
    workdir: Path,
    stats: WindowStats,
    progress: ProgressFn | None = None,
) -> list[np.ndarray]:
    """The heat map of every sigma from one pass over the windows (``params.sigma`` is ignored).

    Each batch's maps are upsampled once and added to one stitcher per sigma; the result for each sigma is
    what :func:`worker.engine.pipeline.stitch_windows` gives for the same windows.
    """
    if not sigmas:
        raise InvalidParameter("at least one sigma is needed")
    share = max(1, budget_bytes // len(sigmas))
    stitchers = [
        StripStitcher(
            height=grid.height,
            width=grid.width,
            window=grid.window,
            sigma=sigma,
            sink=make_sink(grid.height, grid.width, budget_bytes=share, workdir=workdir),
        )
        for sigma in sigmas
    ]
    batches = run_windows(
        image, model, grid=grid, params=params, batch_size=batch_size, stats=stats, progress=progress
    )
    for batch in batches:
        t0 = time.perf_counter()
        maps = upsample_maps(batch.maps, grid.window)
        for stitcher in stitchers:
            stitcher.add(maps, batch.prob, batch.ys, batch.xs)
            if len(batch.ys):
                stitcher.flush_until(int(batch.ys[-1]))
        stats.seconds["stitch"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    heats = [stitcher.finish() for stitcher in stitchers]
    stats.seconds["stitch"] += time.perf_counter() - t0
    return heats


def dense_sweep(
    image: np.ndarray,
    model: LoadedModel,
    *,
    sigmas: Sequence[float | None],
    precision: Precision,
    stats: WindowStats,
    progress: ProgressFn | None = None,
    options: DenseOptions | None = None,
) -> list[np.ndarray]:
    """Dense-mode heat maps for each sigma from one fully convolutional pass.

    The cell grid of W.F is computed once by :func:`worker.engine.dense_tiles.cam_grid`; the per-sigma part repeats the
    second half of :func:`worker.engine.dense_tiles.dense_heatmap` (which computes the grid anew for every call), and the
    tests hold the two equal.
    """
    window = model.card.window
    if window % DENSE_STRIDE:
        raise InvalidParameter(
            f"dense mode needs a window that is a multiple of {DENSE_STRIDE}, got {window}"
        )
    cells = window // DENSE_STRIDE
    h, w = image.shape
    padded = np.zeros(
        (
            math.ceil(max(h, window) / DENSE_STRIDE) * DENSE_STRIDE,
            math.ceil(max(w, window) / DENSE_STRIDE) * DENSE_STRIDE,
        ),
        dtype=np.uint8,
    )
    padded[:h, :w] = image
    t0 = time.perf_counter()
    cam = cam_grid(
        padded, model, dtype=PRECISIONS[precision], options=options or DenseOptions(), progress=progress
    )
    stats.seconds["network"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    _, bias = classifier_weight(model.net)
    logit, lo, hi = window_statistics(cam, float(bias.detach()[0]) if bias is not None else 0.0, cells)
    prob = torch.sigmoid(logit)
    cell_max = F.max_pool2d(torch.from_numpy(padded)[None, None].float(), DENSE_STRIDE)[0, 0]
    keep = F.max_pool2d(cell_max[None, None], cells, stride=1)[0, 0] > 0
    centres = (np.arange(cells) * DENSE_STRIDE + (DENSE_STRIDE - 1) / 2.0).round().astype(int)
    heats = []
    for sigma in sigmas:
        weights = torch.from_numpy(gaussian_weights(window, sigma)[np.ix_(centres, centres)].copy()).float()
        heat_cells = stitch_cells(cam, prob, lo, hi, weights, keep)
        heat = F.interpolate(
            heat_cells[None, None], scale_factor=DENSE_STRIDE, mode="bilinear", align_corners=False
        )
        heats.append(heat[0, 0, :h, :w].clamp(0, 1).numpy().astype(np.float32))
    stats.total = int(keep.numel())
    stats.skipped = stats.total - int(keep.sum())
    stats.done = stats.total
    stats.max_prob = float(prob[keep].max()) if bool(keep.any()) else 0.0
    stats.seconds["stitch"] += time.perf_counter() - t0
    return heats


def preview(values: np.ndarray, side: int, *, mean: bool) -> np.ndarray:
    """A copy no longer than ``side`` px: block means (heat) or block centres (labels)."""
    f = max(1, math.ceil(max(values.shape) / side))
    h, w = values.shape[0] // f, values.shape[1] // f
    if mean:
        blocks = np.asarray(values[: h * f, : w * f], dtype=np.float32).reshape(h, f, w, f)
        return np.asarray(blocks.mean(axis=(1, 3)), dtype=np.float32)
    return np.ascontiguousarray(values[f // 2 : h * f : f, f // 2 : w * f : f])
