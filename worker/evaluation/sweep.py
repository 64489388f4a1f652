"""Window outputs computed once and stitched for many sigmas: the reuse that makes a Table 2 sweep cheap.

Sigma changes only the stitching weights. An exact pass runs the windows once and hands the batches to the
engine's stitcher for every sigma at once (see ``benchmarks/restitch_sweep.py``); a dense pass computes the
cell grid of W.F once and stitches it on the cell grid for each sigma.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from models.method import Sigma
from models.precision import PRECISIONS
from worker.engine.dense_tiles import DenseOptions, DenseWindows, cam_grid, pad_to_cells
from worker.engine.network_pass import WindowStats
from worker.engine.predictor import Predictor
from worker.engine.windows import WindowGrid
from worker.io.checkpoint import LoadedModel
from worker.params import Precision, SegmentParams
from worker.progress import ProgressFn


def output_stride(model: LoadedModel) -> int:
    """Input pixels per feature-map cell of the CAM layer (32 for EfficientNet)."""
    info = getattr(model.net, "feature_info", None)
    if info:
        return int(info[-1]["reduction"])
    device = model.device
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
    sigmas: Sequence[Sigma],
    batch_size: int,
    budget_bytes: int,
    workdir: Path,
    stats: WindowStats,
    progress: ProgressFn | None = None,
) -> list[np.ndarray]:
    """The heat map of every sigma from one pass over the windows (``params.sigma`` is ignored).

    The engine's own pass (:meth:`worker.engine.predictor.Predictor.exact_pass`) stitches every batch once
    for all sigmas, so each heat map is what ``rcmseg segment`` gives for the same windows and sigma.
    """
    predictor = Predictor.for_model(model, precision=params.precision, batch_size=batch_size)
    stitched = predictor.exact_pass(
        image,
        grid=grid,
        params=params,
        sigmas=sigmas,
        budget_bytes=budget_bytes,
        workdir=workdir,
        stats=stats,
        progress=progress,
    )
    return [heat for heat, _covered in stitched]


def dense_sweep(
    image: np.ndarray,
    model: LoadedModel,
    *,
    sigmas: Sequence[Sigma],
    precision: Precision,
    stats: WindowStats,
    progress: ProgressFn | None = None,
    options: DenseOptions | None = None,
) -> list[np.ndarray]:
    """Dense-mode heat maps for each sigma from one fully convolutional pass.

    The cell grid of W.F and the window statistics are computed once; each sigma is then one
    :meth:`worker.engine.dense_tiles.DenseWindows.heat`, the call that
    :func:`worker.engine.dense_tiles.dense_heatmap` makes for its one sigma.
    """
    padded = pad_to_cells(image, model.card.window)
    options = options or DenseOptions()
    t0 = time.perf_counter()
    cam = cam_grid(padded, model, dtype=PRECISIONS[precision], options=options, progress=progress)
    stats.seconds["network"] += time.perf_counter() - t0

    t0 = time.perf_counter()
    windows = DenseWindows.from_cam_grid(
        cam, padded, model, image.shape, options=options, dtype=PRECISIONS[precision]
    )
    heats = [windows.heat(sigma) for sigma in sigmas]
    stats.total = stats.done = windows.count
    stats.skipped = windows.count - windows.kept
    stats.max_prob = windows.max_prob
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
