"""Dense mode: the whole processing image through the feature extractor in haloed tiles, beyond the paper.

Windows sit on the network's output stride (32 px for EfficientNet); see ``models.cam.dense`` for the math.
Tiles overlap by a halo of cells that is cut away afterwards so tile seams do not change the features.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.cam.classic import normalise_input
from models.cam.dense import stitch_cells, window_statistics, windowed_squeeze_excite
from models.network import classifier_weight
from worker.engine.params import CancelFn, Progress, ProgressFn
from worker.engine.stitch import gaussian_weights
from worker.errors import JobCanceled
from worker.io.checkpoint import LoadedModel

STRIDE = 32


@dataclass(frozen=True, kw_only=True)
class DenseOptions:
    """Tile core and halo in cells of the output stride, and whether squeeze-excitation is windowed."""

    tile_cells: int = 32
    halo_cells: int = 8
    windowed_se: bool = True


@dataclass
class DenseResult:
    heat: np.ndarray
    covered_pixels: int
    windows: int
    skipped: int
    max_prob: float
    seconds: dict[str, float]


def cam_grid(
    image: np.ndarray,
    model: LoadedModel,
    *,
    dtype: torch.dtype,
    options: DenseOptions,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> torch.Tensor:
    """W.F at every 32 px cell of the (padded) image, computed tile by tile with a halo."""
    net, card = model.net, model.card
    device = next(net.parameters()).device
    weight, _ = classifier_weight(net)
    hc, wc = image.shape[0] // STRIDE, image.shape[1] // STRIDE
    out = torch.zeros((hc, wc), dtype=torch.float32)
    core, halo = options.tile_cells, options.halo_cells
    tiles = [(r, c) for r in range(0, hc, core) for c in range(0, wc, core)]
    context = windowed_squeeze_excite(net, card.window) if options.windowed_se else nullcontext()
    with context, torch.inference_mode():
        for n, (r, c) in enumerate(tiles):
            if should_cancel is not None and should_cancel():
                raise JobCanceled("canceled between tiles")
            r1, c1 = min(r + core, hc), min(c + core, wc)
            # the halo stops at the image's edge, where windows stop too: there the network's own zero
            # padding plays the part it plays at a window's edge
            top, left = max(r - halo, 0), max(c - halo, 0)
            bottom, right = min(r1 + halo, hc), min(c1 + halo, wc)
            block = image[top * STRIDE : bottom * STRIDE, left * STRIDE : right * STRIDE]
            tile = torch.from_numpy(np.ascontiguousarray(block))[None]
            x = normalise_input(tile.to(device), card.mean, card.std)
            if dtype != torch.float32:
                with torch.autocast(device_type=device.type, dtype=dtype):
                    feats = net.forward_features(x)  # type: ignore[operator]
            else:
                feats = net.forward_features(x)  # type: ignore[operator]
            cam = torch.einsum("c,chw->hw", weight[0].float(), feats[0].float())
            out[r:r1, c:c1] = cam[r - top : r1 - top, c - left : c1 - left].cpu()
            if progress is not None:
                progress(Progress("windows", n + 1, len(tiles)))
    return out


def dense_heatmap(
    image: np.ndarray,
    model: LoadedModel,
    *,
    sigma: float | None,
    dtype: torch.dtype = torch.float32,
    options: DenseOptions | None = None,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> DenseResult:
    """The heatmap of windows at every 32 px, stitched on the cell grid and upsampled once."""
    options = options or DenseOptions()
    card = model.card
    if card.window % STRIDE:
        raise ValueError(f"dense mode needs a window that is a multiple of {STRIDE}, got {card.window}")
    cells = card.window // STRIDE
    h, w = image.shape
    hp = math.ceil(max(h, card.window) / STRIDE) * STRIDE
    wp = math.ceil(max(w, card.window) / STRIDE) * STRIDE
    padded = np.zeros((hp, wp), dtype=np.uint8)
    padded[:h, :w] = image
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    cam = cam_grid(
        padded, model, dtype=dtype, options=options, progress=progress, should_cancel=should_cancel
    )
    seconds["network"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    _, bias = classifier_weight(model.net)
    logit, lo, hi = window_statistics(cam, float(bias.detach()[0]) if bias is not None else 0.0, cells)
    prob = torch.sigmoid(logit)
    cell_max = F.max_pool2d(torch.from_numpy(padded)[None, None].float(), STRIDE)[0, 0]
    keep = F.max_pool2d(cell_max[None, None], cells, stride=1)[0, 0] > 0
    centres = (np.arange(cells) * STRIDE + (STRIDE - 1) / 2.0).astype(np.float64)
    full = gaussian_weights(card.window, sigma)
    weights = torch.from_numpy(full[np.ix_(centres.round().astype(int), centres.round().astype(int))].copy())
    heat_cells = stitch_cells(cam, prob, lo, hi, weights.float(), keep)
    coverage = torch.zeros_like(cam)
    for a in range(cells):
        for b in range(cells):
            coverage[a : a + keep.shape[0], b : b + keep.shape[1]] += keep.float()
    heat = F.interpolate(heat_cells[None, None], scale_factor=STRIDE, mode="bilinear", align_corners=False)
    heat_np = heat[0, 0, :h, :w].clamp(0, 1).numpy().astype(np.float32)
    covered = np.repeat(np.repeat((coverage > 0).numpy(), STRIDE, 0), STRIDE, 1)[:h, :w]
    seconds["stitch"] = time.perf_counter() - t0
    kept = int(keep.sum())
    return DenseResult(
        heat=heat_np,
        covered_pixels=int(covered.sum()),
        windows=int(keep.numel()),
        skipped=int(keep.numel()) - kept,
        max_prob=float(prob[keep].max()) if kept else 0.0,
        seconds=seconds,
    )
