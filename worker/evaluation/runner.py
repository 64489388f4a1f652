"""Running the protocol's plan (:mod:`worker.evaluation.protocol`): patch-level scoring, then every pass over
the split's mosaics, each mosaic's heat maps reduced to score histograms as soon as they are made.

Given an output folder, every finished mosaic's results are kept there at once and a rerun reuses those
whose fingerprint still matches (:mod:`worker.evaluation.resume`), so a stopped evaluation resumes.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.errors import InvalidParameter
from models.metrics.roc import mosaic_histogram
from worker.contract import Stage
from worker.datasets.annotated import MAX_PIXELS, AnnotatedMosaic, labels_for
from worker.engine.device import RunOptions, default_batch_size
from worker.engine.network_pass import WindowStats
from worker.engine.windows import WindowGrid
from worker.evaluation.data import EvalSplit, PatchScores, score_patches
from worker.evaluation.protocol import (
    PREVIEW_SIDE,
    EvalParams,
    EvalResult,
    Panels,
    PassRecord,
    PassSpec,
    plan_passes,
    pooled_score,
)
from worker.evaluation.resume import KeptPass, ResultStore
from worker.evaluation.sweep import dense_sweep, output_stride, preview, sweep_heatmaps
from worker.io.checkpoint import LoadedModel
from worker.io.mosaic import open_mosaic, probe
from worker.io.processing import processing_image
from worker.params import SegmentParams
from worker.progress import Progress, ProgressFn

log = logging.getLogger(__name__)

Previews = list[dict[str, np.ndarray]]
"""Per sigma of a pass: the heat preview of each mosaic by name."""


def evaluate(
    model: LoadedModel,
    split: EvalSplit,
    *,
    params: EvalParams,
    options: RunOptions | None = None,
    patch_cache: Path | None = None,
    progress: ProgressFn | None = None,
    keep_in: Path | None = None,
) -> EvalResult:
    """Run the patch-level scoring and every pass of the sweep over the split's mosaics.

    ``keep_in``: the output folder; each finished result is kept there and results kept by an earlier
    run for the same inputs are reused instead of computed.
    """
    options = options or RunOptions()
    started = time.perf_counter()
    device = model.device
    stride = output_stride(model)
    passes = plan_passes(params, stride)
    store = None if keep_in is None else ResultStore(keep_in, model, params)
    result = EvalResult(
        params=params,
        split=split,
        model=model,
        stride=stride,
        device=str(device),
        passes=passes,
        histograms={c.key: [] for p in passes for c in p.configs},
    )
    if split.patches is not None and len(split.patches):
        result.patches = _patch_scores(split, model, params, options, patch_cache, store, progress)

    scratch = Path(tempfile.mkdtemp(prefix="rcmseg-eval-", dir=options.workdir))
    try:
        cache = _MosaicCache(options.memory_budget_bytes, scratch, model.card.pixel_size_um)
        total, kept = _windows_to_run(split, passes, model, store)
        if kept:
            log.info("resuming: %d of %d mosaic passes were kept by an earlier run", kept,
                     len(passes) * len(split.mosaics))  # fmt: skip
        sweep = _Sweep(result, cache, options, scratch, progress, store, total=total)
        for spec in passes:
            _keep_best_panels(spec, result, sweep.run_pass(spec))
        if params.panels:
            for mosaic in split.mosaics:
                _, labels = cache.get(mosaic)
                result.label_previews[mosaic.name] = preview(labels, PREVIEW_SIDE, mean=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    if store is not None:
        result.reused = list(store.reused)
    return result


def _patch_scores(
    split: EvalSplit,
    model: LoadedModel,
    params: EvalParams,
    options: RunOptions,
    patch_cache: Path | None,
    store: ResultStore | None,
    progress: ProgressFn | None,
) -> PatchScores:
    """The split's patch probabilities: kept ones when the store has them, else computed (and kept)."""
    table = split.patches
    if table is None:
        raise InvalidParameter("the split has no patch table")
    kept = None if store is None else store.load_patches(table)
    if kept is not None:
        return PatchScores(table=table, prob=kept[0], seconds=kept[1])
    scores = score_patches(
        table,
        model,
        cache_dir=patch_cache or Path(tempfile.mkdtemp(prefix="rcmseg-patches-", dir=options.workdir)),
        precision=params.precision,
        batch_size=options.batch_size or default_batch_size(model.device, model.card.window),
        progress=progress,
    )
    if store is not None:
        store.save_patches(table, scores.prob, scores.seconds)
    return scores


class _MosaicCache:
    """Processing images and label maps, kept in memory between passes while they fit the budget."""

    def __init__(self, budget_bytes: int, workdir: Path, pixel_size_um: float) -> None:
        self.budget, self.used, self.workdir, self.pixel_size_um = budget_bytes, 0, workdir, pixel_size_um
        self.kept: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def get(self, mosaic: AnnotatedMosaic) -> tuple[np.ndarray, np.ndarray]:
        if mosaic.name in self.kept:
            return self.kept[mosaic.name]
        k = mosaic.downsample(self.pixel_size_um)
        opened = open_mosaic(mosaic.image, max_pixels=MAX_PIXELS)
        image = processing_image(opened, k, budget_bytes=self.budget, workdir=self.workdir)
        labels = labels_for(mosaic, k, (opened.header.height, opened.header.width))
        if labels.shape != image.shape:
            raise InvalidParameter(
                f"{mosaic.labels}: label map is {labels.shape[1]} x {labels.shape[0]} at the processing "
                f"pixel size, mosaic is {image.shape[1]} x {image.shape[0]}"
            )
        size = image.nbytes + labels.nbytes
        if not isinstance(image, np.memmap) and self.used + size <= self.budget:
            self.kept[mosaic.name] = (image, labels)
            self.used += size
        return image, labels


def _windows_to_run(
    split: EvalSplit, passes: list[PassSpec], model: LoadedModel, store: ResultStore | None
) -> tuple[int, int]:
    """Windows still to run over every pass and mosaic, from the headers (for the progress bar), and the
    number of (pass, mosaic) results already kept."""
    total = kept = 0
    for mosaic in split.mosaics:
        header = probe(mosaic.image, max_pixels=MAX_PIXELS)
        k = mosaic.downsample(model.card.pixel_size_um)
        for spec in passes:
            if store is not None and store.has_pass(spec, mosaic):
                kept += 1
                continue
            total += WindowGrid(
                height=header.height // k, width=header.width // k, window=model.card.window, step=spec.step
            ).count
    return total, kept


@dataclass
class _Sweep:
    """The passes of one evaluation, run one after the other; ``done`` counts the windows run so far (kept
    results not included) for the progress bar and the estimate of the time left."""

    result: EvalResult
    cache: _MosaicCache
    options: RunOptions
    scratch: Path
    progress: ProgressFn | None
    store: ResultStore | None
    total: int
    done: int = 0
    started: float = field(default_factory=time.perf_counter)

    def run_pass(self, spec: PassSpec) -> Previews:
        """One (method, step) pass over every mosaic: a histogram per sigma and mosaic, and the previews."""
        params, mosaics = self.result.params, self.result.split.mosaics
        previews: Previews = [{} for _ in spec.configs]
        for n, mosaic in enumerate(mosaics):
            if self.store is not None and self.store.has_pass(spec, mosaic):
                kept = self.store.load_pass(spec, mosaic)
                log.info("%s %s step %d: mosaic %d/%d %s kept", spec.cam, spec.mode, spec.step, n + 1,
                         len(mosaics), mosaic.name)  # fmt: skip
            else:
                kept = self._compute(spec, mosaic)
                if self.store is not None:
                    self.store.save_pass(spec, mosaic, kept)
                log.info(
                    "%s %s step %d: mosaic %d/%d %s (windows: %d, sigmas: %d) in %.1f s, %s left",
                    spec.cam, spec.mode, spec.step, n + 1, len(mosaics), mosaic.name, kept.record.windows,
                    len(spec.configs), kept.record.seconds, self._time_left(),
                )  # fmt: skip
            for config, hist in zip(spec.configs, kept.histograms, strict=True):
                self.result.histograms[config.key].append(hist)
            if params.panels and kept.previews is not None:
                for heat, shown in zip(kept.previews, previews, strict=True):
                    shown[mosaic.name] = heat
            self.result.records.append(kept.record)
        return previews

    def _compute(self, spec: PassSpec, mosaic: AnnotatedMosaic) -> KeptPass:
        """Run one pass over one mosaic: a histogram and a preview per sigma, and its record."""
        params = self.result.params
        image, labels = self.cache.get(mosaic)
        grid = WindowGrid(
            height=image.shape[0], width=image.shape[1], window=self.result.model.card.window, step=spec.step
        )
        stats = WindowStats()
        t0 = time.perf_counter()
        heats = self._heats(spec, image, grid, stats)
        seconds = time.perf_counter() - t0
        hists = [mosaic_histogram(heat, labels, n_bins=params.n_bins) for heat in heats]
        # previews are kept as float16 in the output folder; rounded alike here, a resumed run's figures
        # are the same as an uninterrupted run's
        shown = (
            [preview(heat, PREVIEW_SIDE, mean=True).astype(np.float16).astype(np.float32) for heat in heats]
            if params.panels
            else None
        )
        del heats
        self.done += grid.count
        if self.progress is not None:
            self.progress(Progress(Stage.WINDOWS, self.done, self.total))
        return KeptPass(histograms=hists, previews=shown, record=_record(spec, mosaic, stats, seconds))

    def _time_left(self) -> str:
        """The time the windows left should take at this run's pace so far (for logs without a bar)."""
        if not self.done:
            return "unknown time"
        left = (self.total - self.done) * (time.perf_counter() - self.started) / self.done
        return f"{left / 60:.1f} min"

    def _heats(
        self, spec: PassSpec, image: np.ndarray, grid: WindowGrid, stats: WindowStats
    ) -> list[np.ndarray]:
        """The heat map of every sigma of ``spec`` for one mosaic, exact or dense."""
        params, model = self.result.params, self.result.model
        base, count = self.done, grid.count

        def report(p: Progress) -> None:
            if self.progress is not None:
                self.progress(
                    Progress(Stage.WINDOWS, base + round(count * p.done / max(p.total, 1)), self.total)
                )

        if spec.mode == "dense":
            return dense_sweep(
                image, model, sigmas=spec.sigmas_px, precision=params.precision, stats=stats, progress=report
            )
        device = model.device
        seg = SegmentParams(
            step=spec.step,
            cam=spec.cam,
            precision=params.precision,
            mode=spec.mode,
            scorecam_top_k=params.scorecam_top_k,
            scorecam_skip_below=params.scorecam_skip_below,
        )
        return sweep_heatmaps(
            image,
            model,
            grid=grid,
            params=seg,
            sigmas=spec.sigmas_px,
            batch_size=self.options.batch_size or default_batch_size(device, model.card.window),
            budget_bytes=self.options.memory_budget_bytes,
            workdir=self.scratch,
            stats=stats,
            progress=report,
        )


def _record(spec: PassSpec, mosaic: AnnotatedMosaic, stats: WindowStats, seconds: float) -> PassRecord:
    return PassRecord(
        cam=spec.cam,
        mode=spec.mode,
        step=spec.step,
        mosaic=mosaic.name,
        windows=stats.total,
        skipped=stats.skipped,
        seconds=seconds,
        network_s=stats.seconds.get("network", 0.0),
        stitch_s=stats.seconds.get("stitch", 0.0),
        sigmas=len(spec.configs),
        scorecam=stats.scorecam.as_dict() if stats.scorecam is not None else None,
    )


def _keep_best_panels(spec: PassSpec, result: EvalResult, previews: Previews) -> None:
    """Keep the heat previews of this pass's best sigma if it beats the method's best so far."""
    if not result.params.panels or not result.split.mosaics:
        return
    for config, kept in zip(spec.configs, previews, strict=True):
        score = pooled_score(result.histograms[config.key])
        best = result.panels.get(config.method)
        if best is None or score > best.score:
            result.panels[config.method] = Panels(key=config.key, score=score, heat=kept)
