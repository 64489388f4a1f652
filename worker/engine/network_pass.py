"""The first half of an exact pass: windows through the network batch by batch.

``run_windows`` yields each batch's probabilities and normalised maps; :mod:`worker.engine.accumulate`
stitches them. The pipeline (:mod:`worker.engine.pipeline`) chains the two; an evaluation keeps the batches
and restitches.

A CUDA out-of-memory during a batch is recovered where its cause is known: the batch is run again in halves
(down to one window) and every later batch at the size that fitted; ``WindowStats`` records the retries and
the final size, which the summary reports. The map function is a callable (``map_fn``), so the recovery is
tested on the CPU with one that raises for batches above a size.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from models.cam.classic import WindowMaps, cam_windows, normalise_input, pad_batch
from models.cam.scorecam import ScoreCamParams
from models.precision import PRECISIONS
from worker.contract import Stage
from worker.engine.scorecam_windows import ScoreCamTally, scorecam_window_maps
from worker.engine.source import iter_pixel_batches, prefetch, resident_batches
from worker.engine.windows import WindowGrid
from worker.errors import JobCanceled
from worker.io.checkpoint import LoadedModel
from worker.io.processing import StreamedImage
from worker.params import SegmentParams
from worker.progress import CancelFn, Progress, ProgressFn

log = logging.getLogger(__name__)

MapFn = Callable[[torch.Tensor], WindowMaps]
"""A normalised window batch (n, C, S, S) on the device to its probabilities and normalised maps."""


@dataclass(frozen=True)
class WindowBatch:
    """Network output for a batch of windows: corners, probabilities and normalised maps (on the CPU)."""

    ys: np.ndarray
    xs: np.ndarray
    prob: torch.Tensor
    maps: torch.Tensor


@dataclass
class WindowStats:
    """Counts gathered while windows run."""

    total: int = 0
    done: int = 0
    skipped: int = 0
    max_prob: float = 0.0
    scorecam: ScoreCamTally | None = None
    batch_size: int = 0
    """The batch the windows run at now: the requested one, or what fitted after out-of-memory retries."""
    oom_retries: int = 0
    compiled: bool = False
    parts: list[dict[str, Any]] | None = None
    """The bands of a mosaic shared out over workers (:mod:`worker.engine.bands`), for the summary."""
    seconds: dict[str, float] = field(
        default_factory=lambda: {"extract": 0.0, "h2d": 0.0, "network": 0.0, "stitch": 0.0}
    )


def bucket(n: int, batch_size: int) -> int:
    """The batch dimension ``n`` windows run at: the batch size, or the smallest power of two that holds
    them when that is smaller. A job's network calls then have a few shapes known in advance
    (:func:`batch_shapes`), whatever the mosaic's window count: compiled graphs and cuDNN's per-shape
    plans are made once per worker, not once per mosaic."""
    if n >= batch_size:
        return batch_size
    return min(batch_size, 1 << max(0, n - 1).bit_length())


def batch_shapes(batch_size: int) -> tuple[int, ...]:
    """Every batch dimension :func:`bucket` gives for ``batch_size``: the powers of two below it, and it."""
    sizes = {batch_size}
    size = 1
    while size < batch_size:
        sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))


def smaller_bucket(size: int) -> int:
    """The batch after an out-of-memory at ``size``: the largest power of two below it (at least 1)."""
    return max(1, 1 << max(0, (size - 1).bit_length() - 1))


def _map_fn(model: LoadedModel, params: SegmentParams, stats: WindowStats, batch_size: int) -> MapFn:
    dtype = PRECISIONS[params.precision]
    if params.cam == "scorecam":
        stats.scorecam = ScoreCamTally(
            ScoreCamParams(
                top_k=params.scorecam_top_k, skip_below=params.scorecam_skip_below, chunk=batch_size
            )
        )
        tally = stats.scorecam

        def current() -> int:  # the batch an out-of-memory may have lowered: the masked passes follow it
            return stats.batch_size or batch_size

        maps = scorecam_window_maps(model, dtype=dtype, tally=tally, pad=lambda n: bucket(n, current()))

        def following_the_batch(x: torch.Tensor) -> WindowMaps:
            if tally.params.chunk > current():
                tally.params = replace(tally.params, chunk=current())
            return maps(x)

        return following_the_batch
    compiled = model.compiled
    if compiled is None:
        return lambda x: cam_windows(model.net, x, dtype=dtype)
    stats.compiled = True

    def compiled_or_eager(x: torch.Tensor) -> WindowMaps:
        # the full batch (nearly every window) runs compiled; a job's one short batch, warm, eagerly
        if x.shape[0] == compiled.batch_size:
            return compiled(x, dtype)  # type: ignore[no-any-return]
        return cam_windows(model.net, x, dtype=dtype)

    return compiled_or_eager


def map_with_retry(map_fn: MapFn, x: torch.Tensor, stats: WindowStats, *, pad: bool = True) -> WindowMaps:
    """``map_fn`` over ``x`` in chunks of ``stats.batch_size``; a CUDA out-of-memory lowers the size to the
    power of two below it (down to 1, recorded in ``stats``) and runs the whole batch again. ``pad`` fills
    a short chunk with zero windows up to its :func:`bucket`, and drops their outputs (``pad=False`` for a
    map function that pads itself, as ScoreCAM does)."""
    n = int(x.shape[0])
    if stats.batch_size < 1:
        stats.batch_size = n
    while True:
        size = stats.batch_size
        try:
            probs, maps = [], []
            for i in range(0, n, size):
                chunk = x[i : i + size]
                m = int(chunk.shape[0])
                out = map_fn(pad_batch(chunk, bucket(m, size)) if pad else chunk)
                probs.append(out.prob[:m].float())
                maps.append(out.maps[:m].float())
            if len(probs) == 1:
                return WindowMaps(prob=probs[0], maps=maps[0])
            return WindowMaps(prob=torch.cat(probs), maps=torch.cat(maps))
        except torch.cuda.OutOfMemoryError:
            if stats.batch_size <= 1:
                raise
            del probs, maps
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            stats.batch_size = smaller_bucket(min(stats.batch_size, bucket(n, stats.batch_size)))
            stats.oom_retries += 1
            log.warning("out of device memory: batch lowered to %d windows", stats.batch_size)


def run_windows(
    image: np.ndarray | StreamedImage,
    model: LoadedModel,
    *,
    grid: WindowGrid,
    params: SegmentParams,
    batch_size: int,
    stats: WindowStats,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    on_device: bool = False,
    map_fn: MapFn | None = None,
    resident: bool = False,
) -> Iterator[WindowBatch]:
    """Probabilities and normalised maps of every non-empty window, batch by batch, in raster order.

    With ``on_device`` the outputs stay where the network ran (for stitching there); otherwise they are
    moved to the CPU (for keeping and restitching). ``map_fn`` replaces the network pass that ``params``
    choose (CAM, compiled CAM or ScoreCAM). With ``resident`` the image is uploaded to the device once and
    windows are cut there (:func:`worker.engine.source.resident_batches`); otherwise a host thread cuts
    them ahead of the device.
    """
    device = model.device
    card = model.card
    if map_fn is None:
        map_fn = _map_fn(model, params, stats, batch_size)
    pads_itself = params.cam == "scorecam"
    stats.batch_size = batch_size
    stats.total = grid.count
    started = time.perf_counter()
    if resident:
        source = resident_batches(image, grid, batch_size, device=device)
    else:
        source = prefetch(iter_pixel_batches(image, grid, batch_size, pin=device.type == "cuda"))
    for batch in source:
        if should_cancel is not None and should_cancel():
            raise JobCanceled("canceled between batches")
        stats.skipped += batch.skipped
        stats.done += batch.skipped
        stats.seconds["extract"] += batch.seconds
        if len(batch.ys):
            t0 = time.perf_counter()
            with torch.inference_mode():
                x = normalise_input(batch.pixels.to(device, non_blocking=True), card.mean, card.std)
                if device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                    torch.cuda.synchronize(device)
                t1 = time.perf_counter()
                out = map_with_retry(map_fn, x, stats, pad=not pads_itself)
                prob, maps = out.prob, out.maps
                if not on_device:
                    prob, maps = prob.cpu(), maps.cpu()
                elif device.type == "cuda":
                    torch.cuda.synchronize(device)  # so the network time is the network's
            stats.seconds["h2d"] += t1 - t0
            stats.seconds["network"] += time.perf_counter() - t1
            stats.max_prob = max(stats.max_prob, float(prob.max()))
            stats.done += len(batch.ys)
            yield WindowBatch(ys=batch.ys, xs=batch.xs, prob=prob, maps=maps)
        if progress is not None:
            elapsed = time.perf_counter() - started
            rate = stats.done / elapsed if elapsed > 0 else 0.0
            eta = (stats.total - stats.done) / rate if rate > 0 else None
            progress(Progress(Stage.WINDOWS, stats.done, stats.total, eta))
