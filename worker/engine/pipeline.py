"""The mosaic engine: read, downsample, run windows through the network, stitch, export.

``segment_mosaic`` is the whole pipeline used by the command line and the queue job. ``run_windows`` and
``stitch_windows`` are its two halves, exposed so an evaluation can compute window outputs once and
restitch them for many Gaussian sigmas.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyvips
import torch

from models.cam.classic import WindowMaps, cam_windows, normalise_input
from models.cam.scorecam import ScoreCamParams
from models.errors import InvalidParameter, JobCanceled
from worker.engine.dense import STRIDE as DENSE_STRIDE
from worker.engine.dense import dense_heatmap
from worker.engine.device import release_freed_memory
from worker.engine.params import CancelFn, Progress, ProgressFn, RunOptions, SegmentParams
from worker.engine.scorecam import ScoreCamTally, scorecam_window_maps
from worker.engine.source import iter_pixel_batches, prefetch
from worker.engine.stitch import StripStitcher, make_sink
from worker.engine.windows import WindowGrid
from worker.io.checkpoint import LoadedModel
from worker.io.export import write_outputs, write_summary
from worker.io.mosaic import Mosaic, VivaBlockLayout, decode_error, input_sha256, open_mosaic

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(choice: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a clear error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise InvalidParameter("device 'cuda' requested but no CUDA device is available")
    if choice not in ("cpu", "cuda"):
        raise InvalidParameter(f"device must be auto, cpu or cuda, got {choice!r}")
    return torch.device(choice)


def default_batch_size(device: torch.device, window: int) -> int:
    """A batch that keeps the device busy: large on a GPU, small on a CPU (cache-friendly)."""
    scale = (256 / window) ** 2
    return max(1, int((256 if device.type == "cuda" else 16) * scale))


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
    seconds: dict[str, float] = field(
        default_factory=lambda: {"extract": 0.0, "h2d": 0.0, "network": 0.0, "stitch": 0.0}
    )


def processing_image(mosaic: Mosaic, downsample: int, *, budget_bytes: int, workdir: Path) -> np.ndarray:
    """The mosaic area-averaged by an integer factor, in memory or memory-mapped from a raw file.

    The input is first cropped to a multiple of the factor (at most factor-1 px are dropped per axis).
    """
    img = mosaic.image
    w, h = img.width // downsample, img.height // downsample
    if w < 1 or h < 1:
        raise InvalidParameter(
            f"{mosaic.source}: {img.width} x {img.height} px is smaller than downsample factor {downsample}"
        )
    if downsample > 1:
        img = img.crop(0, 0, w * downsample, h * downsample).shrink(downsample, downsample)
    try:
        if w * h <= budget_bytes:
            return np.asarray(img.numpy(), dtype=np.uint8).reshape(h, w)
        raw = workdir / "processing.u8"
        img.rawsave(str(raw))
        return np.memmap(raw, dtype=np.uint8, mode="r", shape=(h, w))
    except pyvips.Error as exc:
        raise decode_error(mosaic.source, exc) from None


def _map_fn(
    model: LoadedModel, params: SegmentParams, stats: WindowStats
) -> Callable[[torch.Tensor], WindowMaps]:
    dtype = PRECISIONS[params.precision]
    if params.cam == "scorecam":
        stats.scorecam = ScoreCamTally(
            ScoreCamParams(top_k=params.scorecam_top_k, skip_below=params.scorecam_skip_below)
        )
        return scorecam_window_maps(model, dtype=dtype, tally=stats.scorecam)
    return lambda x: cam_windows(model.net, x, dtype=dtype)


def run_windows(
    image: np.ndarray,
    model: LoadedModel,
    *,
    grid: WindowGrid,
    params: SegmentParams,
    batch_size: int,
    stats: WindowStats,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    on_device: bool = False,
) -> Iterator[WindowBatch]:
    """Probabilities and normalised maps of every non-empty window, batch by batch, in raster order.

    With ``on_device`` the outputs stay where the network ran (for stitching there); otherwise they are
    moved to the CPU (for keeping and restitching).
    """
    device = next(model.net.parameters()).device
    card = model.card
    map_fn = _map_fn(model, params, stats)
    stats.total = grid.count
    started = time.perf_counter()
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
                out = map_fn(x)
                prob, maps = out.prob.float(), out.maps.float()
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
            progress(Progress("windows", stats.done, stats.total, eta))


def stitch_windows(
    batches: Iterable[WindowBatch],
    *,
    grid: WindowGrid,
    sigma: float | None,
    budget_bytes: int,
    workdir: Path,
    stats: WindowStats | None = None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, int]:
    """Gaussian-weighted average of p x map over the grid; returns the heatmap and covered pixel count.

    The rolling band of accumulators lives on ``device`` (the GPU when the network runs there), so maps
    never leave the device before they are weighted and summed; only finished rows are copied back.
    """
    sink = make_sink(grid.height, grid.width, budget_bytes=budget_bytes, workdir=workdir)
    stitcher = StripStitcher(
        height=grid.height, width=grid.width, window=grid.window, sigma=sigma, sink=sink, device=device
    )
    for batch in batches:
        t0 = time.perf_counter()
        stitcher.add(batch.maps, batch.prob, batch.ys, batch.xs)
        if len(batch.ys):
            stitcher.flush_until(int(batch.ys[-1]))
        if stats is not None:
            stats.seconds["stitch"] += time.perf_counter() - t0
    t0 = time.perf_counter()
    heat = stitcher.finish()
    if stats is not None:
        stats.seconds["stitch"] += time.perf_counter() - t0
    return heat, stitcher.covered_pixels


def _dense(
    image: np.ndarray,
    model: LoadedModel,
    params: SegmentParams,
    stats: WindowStats,
    progress: ProgressFn | None,
    should_cancel: CancelFn | None,
) -> tuple[np.ndarray, int]:
    if params.cam != "cam":
        raise InvalidParameter("dense mode computes classic CAM only; use --mode exact for ScoreCAM")
    result = dense_heatmap(
        image,
        model,
        sigma=params.sigma,
        dtype=PRECISIONS[params.precision],
        progress=progress,
        should_cancel=should_cancel,
    )
    stats.total, stats.skipped, stats.done = result.windows, result.skipped, result.windows
    stats.max_prob = result.max_prob
    stats.seconds.update(result.seconds)
    return result.heat, result.covered_pixels


def _replace_dir(tmp: Path, out_dir: Path, *, overwrite: bool) -> None:
    if out_dir.exists():
        if not overwrite:
            raise InvalidParameter(f"{out_dir}: output folder already exists")
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out_dir)


def segment_mosaic(
    source: Path,
    model: LoadedModel,
    out_dir: Path,
    *,
    params: SegmentParams,
    options: RunOptions | None = None,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
    layout: VivaBlockLayout | None = None,
    overwrite: bool = False,
) -> dict[str, object]:
    """Segment one mosaic and write every output into ``out_dir`` atomically; returns the summary."""
    options = options or RunOptions()
    source, out_dir = Path(source), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise InvalidParameter(f"{out_dir}: output folder already exists")
    card = model.card
    threshold = card.threshold if params.threshold is None else params.threshold
    device = next(model.net.parameters()).device
    batch_size = options.batch_size or default_batch_size(device, card.window)
    timings: dict[str, float] = {}
    report = progress or (lambda _p: None)

    t0 = time.perf_counter()
    report(Progress("read", 0, 1))
    mosaic = open_mosaic(source, max_pixels=options.max_pixels, layout=layout)
    downsample = params.downsample_for(card.pixel_size_um)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    scratch = Path(tempfile.mkdtemp(prefix="rcmseg-", dir=options.workdir))
    try:
        image = processing_image(
            mosaic, downsample, budget_bytes=options.memory_budget_bytes, workdir=scratch
        )
        sha = input_sha256(source)
        timings["read_downsample"] = time.perf_counter() - t0
        report(Progress("read", 1, 1))

        step = DENSE_STRIDE if params.mode == "dense" else params.step
        grid = WindowGrid(height=image.shape[0], width=image.shape[1], window=card.window, step=step)
        stats = WindowStats()
        t1 = time.perf_counter()
        if params.mode == "dense":
            heat, covered = _dense(image, model, params, stats, progress, should_cancel)
        else:
            batches = run_windows(
                image,
                model,
                grid=grid,
                params=params,
                batch_size=batch_size,
                stats=stats,
                progress=progress,
                should_cancel=should_cancel,
                on_device=True,
            )
            heat, covered = stitch_windows(
                batches,
                grid=grid,
                sigma=params.sigma,
                budget_bytes=options.memory_budget_bytes,
                workdir=scratch,
                stats=stats,
                device=device,
            )
        timings["windows_total"] = time.perf_counter() - t1
        del image  # the processing image is not needed for export: free it before the pyramids
        release_freed_memory()
        for stage in ("extract", "h2d", "network", "stitch"):
            timings[stage] = stats.seconds[stage]

        t2 = time.perf_counter()
        export = write_outputs(
            tmp, heat=heat, mosaic=mosaic, downsample=downsample, threshold=threshold, progress=progress
        )
        timings.update(export.timings)
        timings["export_total"] = time.perf_counter() - t2
        summary: dict[str, object] = {
            "input": {
                "name": source.name,
                "sha256": sha,
                "format": mosaic.header.format,
                "width": mosaic.header.width,
                "height": mosaic.header.height,
                "bands": mosaic.header.bands,
                "bit_depth": mosaic.header.bit_depth,
                "notes": mosaic.notes,
            },
            "processing": {
                "width": grid.width,
                "height": grid.height,
                "downsample": downsample,
                "pixel_size_um": card.pixel_size_um,
            },
            "windows": {
                "total": stats.total,
                "skipped": stats.skipped,
                "computed": stats.total - stats.skipped,
                "window": card.window,
                "batch_size": batch_size,
            },
            "step": step,
            "sigma": params.sigma,
            "cam": params.cam,
            "mode": params.mode,
            "threshold": threshold,
            "precision": params.precision,
            "device": str(device),
            "aspecific_area_fraction": export.positive_pixels / covered if covered else 0.0,
            "aspecific_area_mm2": export.positive_pixels * (card.pixel_size_um * 1e-3) ** 2,
            "scanned_area_mm2": covered * (card.pixel_size_um * 1e-3) ** 2,
            "max_window_probability": stats.max_prob,
            "scorecam": stats.scorecam.as_dict() if stats.scorecam is not None else None,
            "regions": export.regions,
            "model": {"name": card.name, "arch": card.arch, "weights_sha256": model.weights_sha256},
            "timings_s": {k: round(v, 4) for k, v in timings.items()},
            "version": package_version(),
        }
        timings["total"] = time.perf_counter() - t0
        summary["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
        write_summary(tmp, summary)
        _replace_dir(tmp, out_dir, overwrite=overwrite)
        log.info(
            "segmented %s: %d windows (%d skipped) in %.1f s",
            source.name,
            stats.total,
            stats.skipped,
            timings["total"],
        )
        return summary
    except pyvips.Error as exc:
        raise decode_error(source, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
        release_freed_memory()  # a worker between jobs holds only what it still uses


def package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rcmseg")
    except PackageNotFoundError:
        return "0+unknown"


def estimate_windows(height: int, width: int, *, downsample: int, window: int, step: int) -> int:
    """How many windows a mosaic of this size needs, before reading it."""
    grid = WindowGrid(
        height=max(1, height // downsample), width=max(1, width // downsample), window=window, step=step
    )
    return grid.count
