"""The mosaic pipeline: read, downsample, run windows through the network, stitch, export.

``segment_mosaic`` is the whole pipeline used by the command line and the queue job; its stages live in
their own modules (:mod:`worker.io.processing`, :mod:`worker.engine.network_pass`,
:mod:`worker.engine.dense_tiles`, :mod:`worker.io.export`, :mod:`worker.engine.summary`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

from models.errors import InvalidParameter
from models.precision import PRECISIONS
from worker.contract import Stage
from worker.engine.dense_tiles import STRIDE as DENSE_STRIDE
from worker.engine.dense_tiles import dense_heatmap
from worker.engine.device import RunOptions, default_batch_size, release_freed_memory
from worker.engine.network_pass import WindowStats
from worker.engine.predictor import Predictor
from worker.engine.summary import RunFacts, build_summary
from worker.engine.windows import WindowGrid
from worker.errors import ExportFailed
from worker.io.checkpoint import LoadedModel
from worker.io.dicom.segmentation import seg_algorithm
from worker.io.export import write_outputs, write_summary
from worker.io.files import current_umask, swap_into_place
from worker.io.mosaic import Mosaic, VivaBlockLayout, decode_error, input_sha256, open_mosaic
from worker.io.processing import StreamedImage, stream_processing_image, whole_of
from worker.params import SegmentParams
from worker.plan import Plan, plan_for
from worker.progress import CancelFn, Progress, ProgressFn

log = logging.getLogger(__name__)

STAGES = ("extract", "h2d", "network", "stitch")
"""The per-batch stages whose seconds a run reports."""


def _dense(
    image: np.ndarray | StreamedImage,
    model: LoadedModel,
    params: SegmentParams,
    stats: WindowStats,
    batch_size: int,
    progress: ProgressFn | None,
    should_cancel: CancelFn | None,
) -> tuple[np.ndarray, int]:
    if params.cam != "cam":
        raise InvalidParameter("dense mode computes classic CAM only; use --mode exact for ScoreCAM")
    result = dense_heatmap(
        whole_of(image),
        model,
        sigma=params.sigma,
        dtype=PRECISIONS[params.precision],
        batch_size=batch_size,
        progress=progress,
        should_cancel=should_cancel,
    )
    stats.total, stats.skipped, stats.done = result.windows, result.skipped, result.windows
    stats.max_prob = result.max_prob
    stats.seconds.update(result.seconds)
    return result.heat, result.covered_pixels


def heat_of(
    image: np.ndarray | StreamedImage,
    model: LoadedModel,
    *,
    grid: WindowGrid,
    params: SegmentParams,
    options: RunOptions,
    batch_size: int,
    scratch: Path,
    progress: ProgressFn | None = None,
    should_cancel: CancelFn | None = None,
) -> tuple[np.ndarray, int, WindowStats]:
    """The heatmap of a processing image, its covered pixel count and the run's window counts."""
    stats = WindowStats()
    if params.mode == "dense":
        heat, covered = _dense(image, model, params, stats, batch_size, progress, should_cancel)
        return heat, covered, stats
    predictor = Predictor.for_model(model, precision=params.precision, batch_size=batch_size)
    ((heat, covered),) = predictor.exact_pass(
        image,
        grid=grid,
        params=params,
        sigmas=[params.sigma],
        budget_bytes=options.memory_budget_bytes,
        workdir=scratch,
        stats=stats,
        progress=progress,
        should_cancel=should_cancel,
    )
    return heat, covered, stats


HeatFn = Callable[..., tuple[np.ndarray, int, WindowStats]]
"""What :func:`heat_of` is: the heatmap of a processing image, its covered pixels and the run's counts."""


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
    source_name: str | None = None,
    heat_fn: HeatFn | None = None,
) -> dict[str, Any]:
    """Segment one mosaic into ``out_dir``, atomically, with the umask's permissions; returns the summary.

    ``heat_fn`` replaces :func:`heat_of` (a fan-out's merge reads its bands' sums instead of the network);
    ``source_name`` names the input in the summary where the file is not named as the user knows it."""
    options = options or RunOptions()
    source, out_dir = Path(source), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise InvalidParameter(f"{out_dir}: output folder already exists")
    started = time.perf_counter()
    (progress or (lambda _p: None))(Progress(Stage.READ, 0, 1))
    mosaic = open_mosaic(source, max_pixels=options.max_pixels, layout=layout, sequential=True)
    plan = plan_for(params, mosaic.header, model.card)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes it private (0700); a result folder follows the umask
    scratch = Path(tempfile.mkdtemp(prefix="rcmseg-", dir=options.workdir))
    try:
        summary = _segment_into(
            tmp,
            OpenedMosaic(
                path=source, name=source_name or source.name, mosaic=mosaic, plan=plan, started=started
            ),
            model,
            params=params,
            options=options,
            scratch=scratch,
            progress=progress,
            should_cancel=should_cancel,
            heat_fn=heat_fn or heat_of,
        )
        if out_dir.exists() and not overwrite:
            raise InvalidParameter(f"{out_dir}: output folder already exists")
        swap_into_place(tmp, out_dir)
        counts, seconds = summary["windows"], summary["timings_s"]["total"]
        log.info(
            "segmented %s (windows: %d, skipped: %d) in %.1f s",
            source.name,
            counts["total"],
            counts["skipped"],
            seconds,
        )
        return summary
    except pyvips.Error as exc:
        raise decode_error(source, exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
        if _large(mosaic, plan, options):
            release_freed_memory()  # after a large mosaic a worker between jobs holds only what it uses


def _large(mosaic: Mosaic, plan: Plan, options: RunOptions) -> bool:
    """Whether the processing image exceeds the memory budget: only then are freed pages handed back to
    the OS before export and after the job. Elsewhere they stay for the next batches, which would fault
    them in again (the first batches of the next job, at about twice a batch's time on the CPU)."""
    header, ds = mosaic.header, plan.downsample
    return (header.width // ds) * (header.height // ds) > options.memory_budget_bytes


@dataclass(frozen=True)
class OpenedMosaic:
    """An opened mosaic, the file it came from and when reading it started."""

    path: Path
    name: str
    mosaic: Mosaic
    plan: Plan
    started: float


def _facts(
    source: OpenedMosaic,
    image: StreamedImage,
    model: LoadedModel,
    *,
    params: SegmentParams,
    options: RunOptions,
    downsample: int,
) -> RunFacts:
    card, device = model.card, model.device
    return RunFacts(
        source_name=source.name,
        sha256=input_sha256(source.path),
        mosaic=source.mosaic,
        plan=source.plan,
        grid=WindowGrid(
            height=image.shape[0],
            width=image.shape[1],
            window=card.window,
            step=DENSE_STRIDE if params.mode == "dense" else params.step,
        ),
        downsample=downsample,
        threshold=card.method_defaults().threshold if params.threshold is None else params.threshold,
        batch_size=options.batch_size or default_batch_size(device, card.window),
        device=device,
    )


def _segment_into(
    tmp: Path,
    source: OpenedMosaic,
    model: LoadedModel,
    *,
    params: SegmentParams,
    options: RunOptions,
    scratch: Path,
    progress: ProgressFn | None,
    should_cancel: CancelFn | None,
    heat_fn: HeatFn,
) -> dict[str, Any]:
    """Every output of one mosaic written into the folder ``tmp``; returns the summary."""
    downsample = source.plan.downsample
    image = stream_processing_image(
        source.mosaic, downsample, budget_bytes=options.memory_budget_bytes, workdir=scratch
    )
    try:
        facts = _facts(source, image, model, params=params, options=options, downsample=downsample)
        (progress or (lambda _p: None))(Progress(Stage.READ, 1, 1))
        t1 = time.perf_counter()
        heat, covered, stats = heat_fn(
            image,
            model,
            grid=facts.grid,
            params=params,
            options=options,
            batch_size=facts.batch_size,
            scratch=scratch,
            progress=progress,
            should_cancel=should_cancel,
        )
        windows_s = time.perf_counter() - t1
    finally:
        image.close()
    timings = {  # the image was read while the windows ran: its own seconds, and those the windows waited
        "read_downsample": image.seconds,
        "read_wait": image.waited,
        "windows_total": windows_s,
    }
    del image  # the processing image is not needed for export: free it before the pyramids
    if _large(source.mosaic, source.plan, options):
        release_freed_memory()
    timings.update({stage: stats.seconds[stage] for stage in STAGES})
    t2 = time.perf_counter()
    try:
        export = write_outputs(
            tmp,
            heat=heat,
            mosaic=source.mosaic,
            downsample=downsample,
            threshold=facts.threshold,
            progress=progress,
            pixel_size_um=model.card.pixel_size_um,  # the TIFFs are at processing resolution
            algorithm=seg_algorithm(
                model, params=params, input_sha256=facts.sha256, threshold=facts.threshold
            ),
        )
    except (pyvips.Error, OSError) as exc:
        raise ExportFailed.because(exc) from None
    timings.update(export.timings)
    timings["export_total"] = time.perf_counter() - t2
    timings["total"] = time.perf_counter() - source.started
    summary = build_summary(
        facts, model=model, params=params, stats=stats, export=export, covered=covered, timings=timings
    )
    try:
        write_summary(tmp, summary)
    except OSError as exc:
        raise ExportFailed.because(exc) from None
    return summary
