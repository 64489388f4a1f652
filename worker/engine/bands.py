"""One mosaic shared out over several workers: bands of window rows, their weighted sums, and the merge.

A band is a run of consecutive window rows. Its windows go through the engine as usual (``run_windows``,
the Gaussian ``StripStitcher``) on the rows of the processing image they touch, but the stitcher hands over
its undivided sums ``sum w p map`` and ``sum w`` (float32) instead of dividing them. The merge adds the
bands' sums where they overlap and divides once (``heat_from_sums``, the stitcher's own rule), so the
heatmap equals the one-worker heatmap up to float32 rounding of the overlap sums (well within 1e-6).

Dense mode splits rows of its haloed tiles instead: each band computes the CAM cells of its tile rows, the
merge joins them (tiles do not depend on each other, so exactly) and stitches the cell grid once.

Band files live in the job's own parts folder of the data folder: ``band-<i>.npz`` then ``band-<i>.json``
(the band's counts and seconds), each written to a temporary name, flushed to disk and renamed, so a band is
complete exactly when its JSON exists, on a local disk or on NFS alike. Both carry the band's identity (job
id, parts key, band, ``parallel``, rows), and the merge takes no file whose identity or rows are not the ones
it planned: a wrong heatmap is worse than a failed job.
"""

from __future__ import annotations

import json
import math
import os
import shutil
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
from worker.engine.dense_tiles import STRIDE, DenseOptions, DenseWindows, cam_grid, core_ranges, pad_to_cells
from worker.engine.device import RunOptions
from worker.engine.network_pass import WindowStats
from worker.engine.predictor import Predictor
from worker.engine.scorecam_windows import ScoreCamTally
from worker.engine.stitch import ArraySums, heat_from_sums
from worker.engine.windows import WindowGrid
from worker.errors import BandMismatch
from worker.io.checkpoint import LoadedModel
from worker.io.processing import StreamedImage, whole_of
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
    cores = core_ranges(padded_h // STRIDE, options)
    return [
        Band(index=i, y0=cores[a][0], y1=cores[b - 1][1], first=a, end=b)
        for i, (a, b) in enumerate(_split(len(cores), parallel))
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
    predictor = Predictor.for_model(model, precision=params.precision, batch_size=batch_size)
    predictor.exact_pass(
        rows,
        grid=grid,
        params=params,
        sigmas=[params.sigma],
        budget_bytes=options.memory_budget_bytes,
        workdir=scratch,
        stats=stats,
        sums=sums,
        progress=progress,
        should_cancel=should_cancel,
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


@dataclass(frozen=True)
class BandOwner:
    """The job a band file belongs to: its id, its parts key (mosaic, model, parameters and ``parallel``)
    and the number of bands it asked for. Written into every band file and checked by the merge."""

    job_id: str
    parts_key: str
    parallel: int

    def identity(self, band: Band) -> dict[str, Any]:
        """What a file of ``band`` of this job says about itself."""
        return {
            "job_id": self.job_id,
            "parts_key": self.parts_key,
            "parallel": self.parallel,
            "band": band.index,
            "y0": band.y0,
            "y1": band.y1,
            "first": band.first,
            "end": band.end,
        }


def _json_path(folder: Path, index: int) -> Path:
    return folder / f"band-{index}.json"


def _record(folder: Path, index: int) -> dict[str, Any] | None:
    try:
        data = json.loads(_json_path(folder, index).read_text())
    except (OSError, ValueError):  # none, or not a file of ours: never used
        return None
    return data if isinstance(data, dict) else None


def band_written(folder: Path, index: int, owner: BandOwner) -> bool:
    """Whether this job's file of band ``index`` is complete in ``folder`` (a file of anything else is
    not). Its rows follow from the parts key; the merge checks them."""
    record = _record(folder, index)
    identity = record.get("identity") if record is not None else None
    mine = {"job_id": owner.job_id, "parts_key": owner.parts_key, "parallel": owner.parallel, "band": index}
    return isinstance(identity, dict) and all(identity.get(k) == v for k, v in mine.items())


def write_band(
    folder: Path, band: Band, arrays: dict[str, np.ndarray], counts: dict[str, Any], *, owner: BandOwner
) -> None:
    """The band's arrays, then its counts (the completion mark), each atomically; both carry the band's
    identity (``BandOwner.identity``)."""
    folder.mkdir(parents=True, exist_ok=True)
    identity = owner.identity(band)
    named: dict[str, Any] = {"identity": np.asarray(json.dumps(identity, sort_keys=True)), **arrays}
    _write_atomic(folder / f"band-{band.index}.npz", lambda fh: np.savez(fh, **named))
    record = {"band": band.index, "y0": band.y0, "y1": band.y1, "identity": identity, **counts}
    _write_atomic(_json_path(folder, band.index), lambda fh: fh.write(json.dumps(record).encode()))


def _check_record(folder: Path, band: Band, owner: BandOwner) -> dict[str, Any]:
    """The counts of this job's file of ``band``; any other file (or none) is a ``BandMismatch``."""
    record = _record(folder, band.index)
    of = f"band {band.index} of {owner.parallel}"
    if record is None:
        raise BandMismatch(f"{of} has no complete file: the merge cannot cover rows {band.y0}-{band.y1}")
    found, expected = record.get("identity") or {}, owner.identity(band)
    wrong = sorted(k for k in expected if found.get(k) != expected[k])
    if wrong:
        raise BandMismatch(f"{of} was written by another job or run ({', '.join(wrong)} differ)")
    return record


def _band_arrays(folder: Path, band: Band, owner: BandOwner, names: tuple[str, ...]) -> list[np.ndarray]:
    """The arrays of this job's ``band``, checked to be this band's and to cover its rows exactly."""
    of = f"band {band.index} of {owner.parallel}"
    try:
        with np.load(folder / f"band-{band.index}.npz", allow_pickle=False) as data:
            identity = json.loads(str(data["identity"])) if "identity" in data.files else None
            arrays = [np.asarray(data[n]) for n in names if n in data.files]
    except (OSError, ValueError) as exc:
        raise BandMismatch(f"{of}: its sums cannot be read ({type(exc).__name__})") from None
    if identity != owner.identity(band):
        raise BandMismatch(f"{of}: its sums were written by another job or run")
    rows = band.y1 - band.y0
    if len(arrays) != len(names) or any(a.ndim != 2 or a.shape[0] != rows for a in arrays):
        raise BandMismatch(f"{of}: its sums do not cover the {rows} rows it claims")
    return arrays


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
    folder: Path,
    parallel: int,
    image: np.ndarray | StreamedImage,
    model: LoadedModel,
    params: SegmentParams,
    *,
    owner: BandOwner,
) -> tuple[np.ndarray, int, WindowStats]:
    """The heatmap of the processing image from its bands' files, its covered pixels and the counts.

    The bands are planned again here, as every band planned them; each file must be this job's (``owner``)
    and cover exactly its band's rows, or the merge fails with ``BandMismatch``: never a heatmap made of
    another job's sums, nor one with rows missing."""
    planned = bands_for(image.shape[:2], model.card.window, params, parallel)
    counts = [_check_record(folder, band, owner) for band in planned]
    stats = merged_stats(counts, params)
    t0 = time.perf_counter()
    if params.mode == "dense":  # the windows' probabilities come from the pixels: all of them
        padded = pad_to_cells(whole_of(image), model.card.window)
        cam = torch.zeros((padded.shape[0] // STRIDE, padded.shape[1] // STRIDE), dtype=torch.float32)
        for band in planned:
            (cells,) = _band_arrays(folder, band, owner, ("cam",))
            if cells.shape[1] != cam.shape[1]:
                raise BandMismatch(f"band {band.index} of {parallel}: its cells are not the mosaic's width")
            cam[band.y0 : band.y1] = torch.from_numpy(cells)
        windows = DenseWindows.from_cam_grid(
            cam, padded, model, (image.shape[0], image.shape[1]), dtype=PRECISIONS[params.precision]
        )
        heat, covered = windows.heat(params.sigma), windows.covered_pixels()
        stats.total, stats.skipped = windows.count, windows.count - windows.kept
        stats.done, stats.max_prob = windows.count, windows.max_prob
    else:
        num = np.zeros(image.shape[:2], dtype=np.float32)
        den = np.zeros(image.shape[:2], dtype=np.float32)
        for band in planned:
            band_num, band_den = _band_arrays(folder, band, owner, ("num", "den"))
            if band_num.shape != band_den.shape or band_num.shape[1] != image.shape[1]:
                raise BandMismatch(f"band {band.index} of {parallel}: its sums are not the mosaic's width")
            num[band.y0 : band.y1] += band_num
            den[band.y0 : band.y1] += band_den
        heat = heat_from_sums(torch.from_numpy(num), torch.from_numpy(den)).numpy()
        covered = int((den > 0).sum())
    stats.seconds["merge"] = time.perf_counter() - t0
    return heat, covered, stats


def remove_parts(folder: Path) -> None:
    """Delete a job's parts folder (its bands' sums): done with at the job's end, whatever the end."""
    shutil.rmtree(folder, ignore_errors=True)
