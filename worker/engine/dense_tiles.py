"""Dense mode: the whole processing image through the feature extractor in haloed tiles, beyond the paper.

Windows sit on the network's output stride (32 px for EfficientNet); see ``models.cam.dense`` for the math.
Tiles overlap by a halo of cells that is cut away afterwards so tile seams do not change the features.
``DenseWindows`` holds what does not depend on sigma, so an evaluation sweep stitches it for many sigmas.

A window's probability is not taken from the dense features: their logit sees the window's surroundings
(on phantoms, 0.58 to 1.15 higher on average than the window's own), which cost most of dense mode's AUC
against exact. Windows on a coarser grid (every ``DENSE_PROB_STEP`` px) are run as the exact pass runs them,
isolated crops through the whole network; the difference between a crop's logit and the dense logit at its
position is interpolated bilinearly onto the 32 px grid and added to the dense logits (:func:`crop_logits`,
:func:`interpolate_logits`). On four test phantoms (``benchmarks.dense_agreement``) that correction every
128 px came closer to exact than the crops' own logits every 64 px, at half the crops.
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
from models.errors import InvalidParameter
from models.method import Sigma
from models.network import classifier_weight
from models.precision import PRECISIONS, autocast_unless_fp32
from worker.contract import Stage
from worker.engine.device import default_batch_size
from worker.engine.network_pass import WindowStats, run_windows
from worker.engine.stitch import gaussian_weights
from worker.engine.windows import WindowGrid
from worker.errors import JobCanceled
from worker.io.checkpoint import LoadedModel
from worker.params import DENSE_PROB_STEP, DENSE_TILE_CELLS, SegmentParams
from worker.progress import CancelFn, Progress, ProgressFn

STRIDE = 32


@dataclass(frozen=True, kw_only=True)
class DenseOptions:
    """Tile core and halo in cells of the output stride, whether squeeze-excitation is windowed, and the
    step in pixels of the isolated crops whose logits give the windows' probabilities (``None``: the
    dense features' own logits). The defaults are what ``SegmentParams.identity`` names
    (``worker.params.DENSE_IDENTITY``)."""

    tile_cells: int = DENSE_TILE_CELLS
    halo_cells: int = 8
    windowed_se: bool = True
    prob_step: int | None = DENSE_PROB_STEP
    prob_offset: bool = True
    """Interpolate the crops' correction of the dense logit (crop logit minus dense logit) instead of the
    crops' logits themselves, keeping the dense logit's detail between crops."""


@dataclass
class DenseResult:
    heat: np.ndarray
    covered_pixels: int
    windows: int
    skipped: int
    max_prob: float
    seconds: dict[str, float]


def _tile_span(start: int, cells: int, span: int, halo: int) -> tuple[int, int]:
    """Cell rows (or columns) ``first:end`` of the tile whose core starts at ``start``: ``span`` cells,
    the core with its halo, moved inward to end flush with the image where the halo would cross its edge
    (as the window grid does), so that every tile of an image has one shape (the image's, where it is
    smaller than one tile). At the image's edge there is no halo, as a window has none there either: the
    network's own zero padding plays the part it plays at a window's edge. Padding a tile instead would
    change the features of the cells near the edge."""
    first = max(0, min(start - halo, cells - span))
    return first, min(first + span, cells)


def core_ranges(cells: int, options: DenseOptions) -> list[tuple[int, int]]:
    """The cores (first, end cell) of the tiles along an axis of ``cells`` cells: one tile of the whole axis
    where it fits in one tile with its halo (a 1750 px phantom), else a core every ``tile_cells`` (each
    tile's span then moved inward at the edge by :func:`_tile_span`)."""
    core = options.tile_cells
    if cells <= core + 2 * options.halo_cells:
        return [(0, cells)]
    return [(r, min(r + core, cells)) for r in range(0, cells, core)]


def tile_shape(height: int, width: int, window: int, options: DenseOptions) -> tuple[int, int]:
    """The one (height, width) in pixels of every tile of an image of this size: a core with its halo,
    or the image padded to cells where it is smaller."""
    span = (options.tile_cells + 2 * options.halo_cells) * STRIDE
    hp = math.ceil(max(height, window) / STRIDE) * STRIDE
    wp = math.ceil(max(width, window) / STRIDE) * STRIDE
    return min(span, hp), min(span, wp)


def cam_grid(
    image: np.ndarray,
    model: LoadedModel,
    *,
    dtype: torch.dtype,
    options: DenseOptions,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    tile_rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """W.F at every 32 px cell of the (padded) image, computed tile by tile with a halo.

    ``tile_rows`` (first, end) computes only those rows of tiles (a band of a mosaic shared out over
    workers); the other cells stay 0. Tiles do not depend on each other, so bands join exactly.
    """
    net, card = model.net, model.card
    device = next(net.parameters()).device
    weight, _ = classifier_weight(net)
    hc, wc = image.shape[0] // STRIDE, image.shape[1] // STRIDE
    out = torch.zeros((hc, wc), dtype=torch.float32)
    span, halo = options.tile_cells + 2 * options.halo_cells, options.halo_cells
    rows = list(enumerate(core_ranges(hc, options)))
    if tile_rows is not None:
        rows = [(i, r) for i, r in rows if tile_rows[0] <= i < tile_rows[1]]
    tiles = [(r, c) for _, r in rows for c in core_ranges(wc, options)]
    context = windowed_squeeze_excite(net, card.window) if options.windowed_se else nullcontext()
    with context, torch.inference_mode():
        for n, ((r, r1), (c, c1)) in enumerate(tiles):
            if should_cancel is not None and should_cancel():
                raise JobCanceled("canceled between tiles")
            top, bottom = _tile_span(r, hc, span, halo)
            left, right = _tile_span(c, wc, span, halo)
            block = image[top * STRIDE : bottom * STRIDE, left * STRIDE : right * STRIDE]
            tile = torch.from_numpy(np.ascontiguousarray(block))[None]
            x = normalise_input(tile.to(device), card.mean, card.std)
            with autocast_unless_fp32(device.type, dtype):
                feats = net.forward_features(x)  # type: ignore[operator]
            cam = torch.einsum("c,chw->hw", weight[0].float(), feats[0].float())
            out[r:r1, c:c1] = cam[r - top : r1 - top, c - left : c1 - left].cpu()
            if progress is not None:
                progress(Progress(Stage.WINDOWS, n + 1, len(tiles)))
    return out


def pad_to_cells(image: np.ndarray, window: int) -> np.ndarray:
    """The image zero-padded to whole cells and to at least one window on each axis."""
    if window % STRIDE:
        raise InvalidParameter(f"dense mode needs a window that is a multiple of {STRIDE}, got {window}")
    h, w = image.shape
    hp = math.ceil(max(h, window) / STRIDE) * STRIDE
    wp = math.ceil(max(w, window) / STRIDE) * STRIDE
    padded = np.zeros((hp, wp), dtype=np.uint8)
    padded[:h, :w] = image
    return padded


def crop_logits(
    padded: np.ndarray, model: LoadedModel, *, step: int, dtype: torch.dtype, batch_size: int
) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """The logits of isolated windows every ``step`` px of the padded image (the exact pass's grid, ending
    flush), run as the exact pass runs them (:func:`worker.engine.network_pass.run_windows`: the batch
    size or a power of two). Returns the window rows' and columns' starts and the (rows, columns) logits,
    NaN where the window is empty and was skipped."""
    if step < 1 or step % STRIDE:
        raise InvalidParameter(f"the crop probability step must be a multiple of {STRIDE}, got {step}")
    grid = WindowGrid(height=padded.shape[0], width=padded.shape[1], window=model.card.window, step=step)
    precision = next(name for name, d in PRECISIONS.items() if d == dtype)
    params = SegmentParams(step=step, precision=precision)  # type: ignore[arg-type]
    stats = WindowStats()
    ys, xs = grid.ys, grid.xs
    logits = torch.full((len(ys), len(xs)), float("nan"))
    batches = run_windows(
        padded, model, grid=grid, params=params, batch_size=batch_size, stats=stats, on_device=False
    )
    for batch in batches:
        rows, cols = np.searchsorted(ys, batch.ys), np.searchsorted(xs, batch.xs)
        logits[rows, cols] = torch.logit(batch.prob.float().reshape(-1), eps=1e-6)
    return ys, xs, logits


def _linear_weights(nodes: np.ndarray, points: np.ndarray) -> torch.Tensor:
    """(points, nodes) weights of piecewise-linear interpolation between ``nodes`` (increasing)."""
    eye = np.eye(len(nodes))
    return torch.from_numpy(np.stack([np.interp(points, nodes, eye[i]) for i in range(len(nodes))], 1))


def interpolate_logits(
    ys: np.ndarray, xs: np.ndarray, logits: torch.Tensor, out_ys: np.ndarray, out_xs: np.ndarray
) -> torch.Tensor:
    """Logits on the nodes (``ys`` x ``xs``) interpolated bilinearly onto ``out_ys`` x ``out_xs``: equal
    to the nodes' where a point is a node, held constant beyond the outer nodes."""
    wy = _linear_weights(ys.astype(np.float64), out_ys.astype(np.float64))
    wx = _linear_weights(xs.astype(np.float64), out_xs.astype(np.float64))
    return (wy @ logits.double() @ wx.T).float()


def crop_window_logits(
    padded: np.ndarray,
    dense_logit: torch.Tensor,
    model: LoadedModel,
    *,
    step: int,
    dtype: torch.dtype,
    batch_size: int,
    offset: bool = False,
) -> torch.Tensor:
    """Every dense window's logit from isolated crops every ``step`` px, interpolated; a skipped (empty)
    crop takes the dense logit at its position. ``offset``: the dense logit plus the interpolated
    difference between crop and dense logits at the crops."""
    ys, xs, logits = crop_logits(padded, model, step=step, dtype=dtype, batch_size=batch_size)
    known = dense_logit[np.ix_(ys // STRIDE, xs // STRIDE)]
    logits = torch.where(torch.isnan(logits), known, logits)
    out_ys = np.arange(dense_logit.shape[0]) * STRIDE
    out_xs = np.arange(dense_logit.shape[1]) * STRIDE
    if offset:
        return dense_logit + interpolate_logits(ys, xs, logits - known, out_ys, out_xs)
    return interpolate_logits(ys, xs, logits, out_ys, out_xs)


@dataclass(frozen=True)
class DenseWindows:
    """Every window at every cell position, reduced to what stitching needs; the same for every sigma.

    ``cam`` is W.F on the cell grid; per window (one per position where a window fits): ``prob``, the
    ``lo``/``hi`` of its W.F, and ``keep`` (not an empty window). ``shape`` is the unpadded image's.
    """

    cam: torch.Tensor
    prob: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    keep: torch.Tensor
    window: int
    shape: tuple[int, int]

    @classmethod
    def from_cam_grid(
        cls,
        cam: torch.Tensor,
        padded: np.ndarray,
        model: LoadedModel,
        shape: tuple[int, int],
        *,
        options: DenseOptions | None = None,
        dtype: torch.dtype = torch.float32,
        batch_size: int | None = None,
    ) -> DenseWindows:
        """Window min/max from the cell grid, logits from isolated crops every ``options.prob_step`` px
        (:func:`crop_window_logits`; ``None``: from the cell grid); a window is empty when all its pixels
        are 0."""
        options = options or DenseOptions()
        cells = model.card.window // STRIDE
        _, bias = classifier_weight(model.net)
        logit, lo, hi = window_statistics(cam, float(bias.detach()[0]) if bias is not None else 0.0, cells)
        if options.prob_step is not None:
            batch = batch_size or default_batch_size(model.device, model.card.window)
            logit = crop_window_logits(
                padded,
                logit,
                model,
                step=options.prob_step,
                dtype=dtype,
                batch_size=batch,
                offset=options.prob_offset,
            )
        cell_max = F.max_pool2d(torch.from_numpy(padded)[None, None].float(), STRIDE)[0, 0]
        keep = F.max_pool2d(cell_max[None, None], cells, stride=1)[0, 0] > 0
        return cls(cam, torch.sigmoid(logit), lo, hi, keep, model.card.window, shape)

    @property
    def count(self) -> int:
        return int(self.keep.numel())

    @property
    def kept(self) -> int:
        return int(self.keep.sum())

    @property
    def max_prob(self) -> float:
        return float(self.prob[self.keep].max()) if self.kept else 0.0

    def heat(self, sigma: Sigma) -> np.ndarray:
        """The heat map for ``sigma``: stitched on the cell grid, upsampled once, cropped to the image."""
        cells = self.window // STRIDE
        centres = (np.arange(cells) * STRIDE + (STRIDE - 1) / 2.0).round().astype(int)
        full = gaussian_weights(self.window, sigma)
        weights = torch.from_numpy(full[np.ix_(centres, centres)].copy()).float()
        heat_cells = stitch_cells(self.cam, self.prob, self.lo, self.hi, weights, self.keep)
        heat = F.interpolate(
            heat_cells[None, None], scale_factor=STRIDE, mode="bilinear", align_corners=False
        )
        h, w = self.shape
        return heat[0, 0, :h, :w].clamp(0, 1).numpy().astype(np.float32)

    def covered_pixels(self) -> int:
        """Image pixels inside at least one kept window."""
        cells = self.window // STRIDE
        coverage = torch.zeros_like(self.cam)
        for a in range(cells):
            for b in range(cells):
                coverage[a : a + self.keep.shape[0], b : b + self.keep.shape[1]] += self.keep.float()
        h, w = self.shape
        covered = np.repeat(np.repeat((coverage > 0).numpy(), STRIDE, 0), STRIDE, 1)[:h, :w]
        return int(covered.sum())


def dense_heatmap(
    image: np.ndarray,
    model: LoadedModel,
    *,
    sigma: Sigma,
    dtype: torch.dtype = torch.float32,
    options: DenseOptions | None = None,
    batch_size: int | None = None,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> DenseResult:
    """The heatmap of windows at every 32 px, stitched on the cell grid and upsampled once."""
    options = options or DenseOptions()
    padded = pad_to_cells(image, model.card.window)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    cam = cam_grid(
        padded,
        model,
        dtype=dtype,
        options=options,
        progress=progress,
        should_cancel=should_cancel,
    )
    seconds["network"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    windows = DenseWindows.from_cam_grid(
        cam, padded, model, image.shape, options=options, dtype=dtype, batch_size=batch_size
    )
    seconds["crops"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    heat = windows.heat(sigma)
    covered = windows.covered_pixels()
    seconds["stitch"] = time.perf_counter() - t0
    return DenseResult(
        heat=heat,
        covered_pixels=covered,
        windows=windows.count,
        skipped=windows.count - windows.kept,
        max_prob=windows.max_prob,
        seconds=seconds,
    )
