"""One mosaic shared out over several workers: bands of window rows, their weighted sums, and the merge.

A band is a run of consecutive window rows. Its windows go through the engine as usual (``run_windows``,
the Gaussian ``StripStitcher``) on the rows of the processing image they touch, but the stitcher hands over
its undivided sums ``sum w p map`` and ``sum w`` (float32) instead of dividing them. The merge adds the
bands' sums where they overlap and divides once (``heat_from_sums``, the stitcher's own rule), so the
heatmap equals the one-worker heatmap up to float32 rounding of the overlap sums (well within 1e-6).

Dense mode splits rows of its haloed tiles instead: each band computes the CAM cells of its tile rows, the
merge joins them (tiles do not depend on each other, so exactly) and stitches the cell grid once.

Band files live in a parts folder of the data folder: ``band-<i>.npz`` then ``band-<i>.json`` (the band's
counts and seconds), each written to a temporary name, flushed to disk and renamed, so a band is complete
exactly when its JSON exists, on a local disk or on NFS alike.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.cam.scorecam import ScoreCamCounts, ScoreCamParams
from models.errors import InvalidParameter
from models.precision import PRECISIONS
from worker.engine.accumulate import stitch_many
from worker.engine.dense_tiles import STRIDE, DenseOptions, DenseWindows, cam_grid, pad_to_cells
from worker.engine.network_pass import WindowStats, run_windows
from worker.engine.options import RunOptions
from worker.engine.scorecam_windows import ScoreCamTally
from worker.engine.stitch import ArraySums, heat_from_sums
from worker.engine.windows import WindowGrid
from worker.io.checkpoint import LoadedModel
from worker.params import SegmentParams
from worker.progress import CancelFn, ProgressFn


@dataclass(frozen=True)
class Band:
    """Band ``index``: processing rows ``y0:y1`` (exact mode) or cell rows (dense mode) it writes, and its
    window rows (exact) or tile rows (dense) ``first:end``."""

    index: int
    y0: int
    y1: int
    first: int
    end: int


def _split(count: int, parallel: int) -> list[tuple[int, int]]:
    """``count`` rows in ``min(parallel, count)`` runs of consecutive rows, as equal as can be."""
    if parallel < 1:
        raise InvalidParameter(f"parallel must be >= 1, got {parallel}")
    n = min(parallel, count)
    edges = [round(i * count / n) for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n)]


def plan_bands(grid: WindowGrid, parallel: int) -> list[Band]:
    """Exact mode: the grid's window rows in ``parallel`` bands (fewer when there are fewer rows)."""
    ys = grid.ys
    bands = []
    for i, (a, b) in enumerate(_split(len(ys), parallel)):
        y0, y1 = int(ys[a]), min(int(ys[b - 1]) + grid.window, grid.height)
        bands.append(Band(index=i, y0=y0, y1=max(y1, y0 + 1), first=a, end=b))
    return bands


def plan_dense_bands(
    height: int, width: int, window: int, parallel: int, options: DenseOptions
) -> list[Band]:
    """Dense mode: rows of tiles in ``parallel`` bands; ``y0:y1`` are the cell rows each one computes."""
    padded_h = math.ceil(max(height, window) / STRIDE) * STRIDE
    hc = padded_h // STRIDE
    core = options.tile_cells
    tile_rows = math.ceil(hc / core)
    return [
        Band(index=i, y0=a * core, y1=min(b * core, hc), first=a, end=b)
        for i, (a, b) in enumerate(_split(tile_rows, parallel))
    ]


def bands_for(image_shape: tuple[int, int], window: int, params: SegmentParams, parallel: int) -> list[Band]:
    """The bands of a processing image for the run ``params`` ask for."""
    h, w = image_shape
    if params.mode == "dense":
        return plan_dense_bands(h, w, window, parallel, DenseOptions())
    return plan_bands(WindowGrid(height=h, width=w, window=window, step=params.step), parallel)


def _stats_dict(stats: WindowStats, wall_s: float) -> dict[str, Any]:
    return {
        "total": stats.total,
        "skipped": stats.skipped,
        "max_prob": stats.max_prob,
        "seconds": stats.seconds,
        "batch_size": stats.batch_size,
        "oom_retries": stats.oom_retries,
        "scorecam": stats.scorecam.counts.as_dict() if stats.scorecam is not None else None,
        "wall_s": round(wall_s, 4),
    }


def compute_band(
    image: np.ndarray,
    model: LoadedModel,
    band: Band,
    *,
    params: SegmentParams,
    options: RunOptions,
    batch_size: int,
    scratch: Path,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A band's arrays (``num``/``den`` of its rows, or dense ``cam`` cells) and its counts."""
    t0 = time.perf_counter()
    stats = WindowStats()
    device = model.device
    if params.mode == "dense":
        if params.cam != "cam":
            raise InvalidParameter("dense mode computes classic CAM only; use --mode exact for ScoreCAM")
        padded = pad_to_cells(image, model.card.window)
        cam = cam_grid(
            padded,
            model,
            dtype=PRECISIONS[params.precision],
            options=DenseOptions(),
            progress=progress,
            should_cancel=should_cancel,
            tile_rows=(band.first, band.end),
        )
        stats.seconds["network"] = time.perf_counter() - t0
        arrays = {"cam": cam[band.y0 : band.y1].numpy()}
        return arrays, _stats_dict(stats, time.perf_counter() - t0)
    rows = image[band.y0 : band.y1]
    grid = WindowGrid(height=rows.shape[0], width=image.shape[1], window=model.card.window, step=params.step)
    full = WindowGrid(height=image.shape[0], width=image.shape[1], window=model.card.window, step=params.step)
    if not np.array_equal(grid.ys + band.y0, full.ys[band.first : band.end]):
        raise InvalidParameter(f"band {band.index} does not match the mosaic's window rows")
    sums = ArraySums(rows.shape[0], image.shape[1])
    batches = run_windows(
        rows,
        model,
        grid=grid,
        params=params,
        batch_size=batch_size,
        stats=stats,
        progress=progress,
        should_cancel=should_cancel,
        on_device=True,
    )
    stitch_many(
        batches,
        grid=grid,
        sigmas=[params.sigma],
        budget_bytes=options.memory_budget_bytes,
        workdir=scratch,
        stats=stats,
        device=device,
        sums=sums,
    )
    return {"num": sums.num, "den": sums.den}, _stats_dict(stats, time.perf_counter() - t0)


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """``write(file)`` into a temporary file beside ``path``, flushed to disk, then renamed into place."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def band_done(folder: Path, index: int) -> bool:
    return (folder / f"band-{index}.json").is_file()


def write_band(folder: Path, band: Band, arrays: dict[str, np.ndarray], counts: dict[str, Any]) -> None:
    """The band's arrays, then its counts (the completion mark), each atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    named: dict[str, Any] = {"y0": np.asarray(band.y0), **arrays}
    _write_atomic(folder / f"band-{band.index}.npz", lambda fh: np.savez(fh, **named))
    record = {"band": band.index, "y0": band.y0, "y1": band.y1, **counts}
    _write_atomic(folder / f"band-{band.index}.json", lambda fh: fh.write(json.dumps(record).encode()))


def _read_counts(folder: Path, bands: int) -> list[dict[str, Any]]:
    missing = [i for i in range(bands) if not band_done(folder, i)]
    if missing:
        raise InvalidParameter(f"bands {missing} of {bands} have not been written")
    return [json.loads((folder / f"band-{i}.json").read_text()) for i in range(bands)]


def merged_stats(counts: list[dict[str, Any]], params: SegmentParams) -> WindowStats:
    """The bands' counts as one run's."""
    stats = WindowStats(
        total=sum(c["total"] for c in counts),
        skipped=sum(c["skipped"] for c in counts),
        max_prob=max((c["max_prob"] for c in counts), default=0.0),
        batch_size=min((c["batch_size"] for c in counts if c["batch_size"]), default=0),
        oom_retries=sum(c["oom_retries"] for c in counts),
    )
    stats.done = stats.total
    for c in counts:
        for stage, seconds in c["seconds"].items():
            stats.seconds[stage] = stats.seconds.get(stage, 0.0) + seconds
    if params.cam == "scorecam":
        tally = ScoreCamTally(
            ScoreCamParams(top_k=params.scorecam_top_k, skip_below=params.scorecam_skip_below)
        )
        for c in counts:
            tally.counts = tally.counts + ScoreCamCounts(**(c["scorecam"] or {}))
        stats.scorecam = tally
    stats.parts = [{"band": c["band"], "rows": [c["y0"], c["y1"]], "wall_s": c["wall_s"]} for c in counts]
    return stats


def merge_bands(
    folder: Path, bands: int, image: np.ndarray, model: LoadedModel, params: SegmentParams
) -> tuple[np.ndarray, int, WindowStats]:
    """The heatmap of the processing image from its bands' files, its covered pixels and the counts."""
    counts = _read_counts(folder, bands)
    stats = merged_stats(counts, params)
    t0 = time.perf_counter()
    if params.mode == "dense":
        padded = pad_to_cells(image, model.card.window)
        cam = torch.zeros((padded.shape[0] // STRIDE, padded.shape[1] // STRIDE), dtype=torch.float32)
        for i in range(bands):
            with np.load(folder / f"band-{i}.npz") as data:
                y0 = int(data["y0"])
                cam[y0 : y0 + data["cam"].shape[0]] = torch.from_numpy(data["cam"])
        windows = DenseWindows.from_cam_grid(cam, padded, model, (image.shape[0], image.shape[1]))
        heat, covered = windows.heat(params.sigma), windows.covered_pixels()
        stats.total, stats.skipped = windows.count, windows.count - windows.kept
        stats.done, stats.max_prob = windows.count, windows.max_prob
    else:
        num = np.zeros(image.shape[:2], dtype=np.float32)
        den = np.zeros(image.shape[:2], dtype=np.float32)
        for i in range(bands):
            with np.load(folder / f"band-{i}.npz") as data:
                y0, rows = int(data["y0"]), data["num"].shape[0]
                num[y0 : y0 + rows] += data["num"]
                den[y0 : y0 + rows] += data["den"]
        heat = heat_from_sums(torch.from_numpy(num), torch.from_numpy(den)).numpy()
        covered = int((den > 0).sum())
    stats.seconds["merge"] = time.perf_counter() - t0
    return heat, covered, stats
