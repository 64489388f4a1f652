"""The paper's evaluation protocol over one split of annotated mosaics (D'Alonzo et al. 2021, "Results").

Patch level: the split's weakly labelled patches through the network, scored as in the paper (ROC, AUC,
accuracy at 0.5). Segmentation: for every (CAM method, step, sigma) of a sweep, each mosaic's heat map is
reduced to score histograms over its labelled pixels (:mod:`models.metrics.roc`); pooled and per-mosaic AUC, the
Dice sweep and the bootstrap follow from those in :mod:`worker.evaluation.report`.

Sigma changes only the stitching weights, so each (method, step) pass runs its windows once and stitches
them for every sigma (:mod:`worker.evaluation.sweep`): a nine-sigma sweep costs one network pass plus nine cheap
accumulations.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import InvalidParameter
from models.metrics.roc import DEFAULT_BINS, ScoreHistogram, mosaic_histogram
from worker.datasets.patches import MAX_PIXELS, AnnotatedMosaic
from worker.engine.dense_tiles import STRIDE as DENSE_STRIDE
from worker.engine.device import default_batch_size
from worker.engine.params import CamMethod, Mode, Precision, Progress, ProgressFn, RunOptions, SegmentParams
from worker.engine.processing import processing_image
from worker.engine.run import WindowStats
from worker.engine.windows import WindowGrid
from worker.evaluation.data import EvalSplit, PatchScores, labels_for, score_patches
from worker.evaluation.sweep import dense_sweep, output_stride, preview, sweep_heatmaps
from worker.io.checkpoint import LoadedModel
from worker.io.mosaic import open_mosaic, probe

log = logging.getLogger(__name__)

DEFAULT_STEPS = (25, 50, 100)
DEFAULT_SIGMA_UNITS: tuple[float | None, ...] = (None, 1.0, 2.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)
"""The paper's sigmas, in units of the network's output stride (32 px for EfficientNet); None = plain mean."""
PREVIEW_SIDE = 512
"""Longest side of the heat maps kept for the per-mosaic figures."""


@dataclass(frozen=True, kw_only=True)
class EvalParams:
    """What to evaluate. Sigmas are in units of the output stride; ScoreCAM speed options apply to every
    ScoreCAM row (both off: exact); ``bootstrap`` resamples (0: none)."""

    cams: tuple[CamMethod, ...] = ("cam", "scorecam")
    steps: tuple[int, ...] = DEFAULT_STEPS
    sigma_units: tuple[float | None, ...] = DEFAULT_SIGMA_UNITS
    modes: tuple[Mode, ...] = ("exact",)
    bootstrap: int = 1000
    seed: int = 0
    precision: Precision = "fp32"
    scorecam_top_k: int | None = None
    scorecam_skip_below: float = 0.0
    n_bins: int = DEFAULT_BINS
    panels: bool = True

    def __post_init__(self) -> None:
        for name in ("cams", "steps", "sigma_units", "modes"):
            values = getattr(self, name)
            if not values:
                raise InvalidParameter(f"{name} must not be empty")
            if len(set(values)) != len(values):
                raise InvalidParameter(f"{name} has duplicates: {list(values)}")
        if any(step < 1 for step in self.steps):
            raise InvalidParameter(f"steps must be >= 1 px, got {list(self.steps)}")
        if any(s is not None and not s > 0 for s in self.sigma_units):
            raise InvalidParameter(f"sigmas must be > 0 or none, got {list(self.sigma_units)}")
        if self.n_bins < 1 or self.n_bins % 50:
            raise InvalidParameter(
                f"n_bins must be a multiple of 50 (Dice thresholds 0.02 apart), got {self.n_bins}"
            )
        if self.bootstrap < 0:
            raise InvalidParameter(f"bootstrap must be >= 0 resamples, got {self.bootstrap}")
        if "dense" in self.modes and "cam" not in self.cams:
            raise InvalidParameter("dense mode computes classic CAM only; add 'cam' to the methods")
        # Fails early on the engine's own checks (methods, precision, ScoreCAM options).
        for cam in self.cams:
            SegmentParams(
                cam=cam,
                precision=self.precision,
                scorecam_top_k=self.scorecam_top_k,
                scorecam_skip_below=self.scorecam_skip_below,
            )


@dataclass(frozen=True)
class RunConfig:
    """One row of Table 2: a CAM method, how windows are placed, and the stitching sigma."""

    cam: CamMethod
    mode: Mode
    step: int
    sigma_units: float | None
    sigma_px: float | None

    @property
    def method(self) -> str:
        """``cam``, ``scorecam`` or ``cam-dense``: one curve, one set of panels."""
        return self.cam if self.mode == "exact" else f"{self.cam}-{self.mode}"

    @property
    def key(self) -> str:
        sigma = "none" if self.sigma_units is None else f"{self.sigma_units:g}"
        return f"{self.cam}/{self.mode}/step{self.step}/sigma{sigma}"


@dataclass(frozen=True)
class PassSpec:
    """Windows computed once (one method, one step) and stitched for every sigma of ``configs``."""

    cam: CamMethod
    mode: Mode
    step: int
    configs: tuple[RunConfig, ...]

    @property
    def sigmas_px(self) -> list[float | None]:
        return [c.sigma_px for c in self.configs]


def plan_passes(params: EvalParams, stride: int) -> list[PassSpec]:
    """Exact passes for every (method, step), then one dense CAM pass (step = the stride) if asked."""
    out = []
    for mode in params.modes:
        cams = params.cams if mode == "exact" else ("cam",)
        steps = params.steps if mode == "exact" else (DENSE_STRIDE,)
        for cam in cams:
            for step in steps:
                configs = tuple(
                    RunConfig(cam, mode, step, u, None if u is None else u * stride)
                    for u in params.sigma_units
                )
                out.append(PassSpec(cam, mode, step, configs))
    return out


@dataclass(frozen=True)
class PassRecord:
    """What one pass over one mosaic cost."""

    cam: str
    mode: str
    step: int
    mosaic: str
    windows: int
    skipped: int
    seconds: float
    network_s: float
    stitch_s: float
    sigmas: int
    scorecam: dict[str, Any] | None = None


@dataclass
class Panels:
    """Heat previews of the best configuration of one method, for the per-mosaic figures."""

    key: str
    score: tuple[float, float]
    heat: dict[str, np.ndarray]


@dataclass
class EvalResult:
    """Everything measured; :mod:`worker.evaluation.report` turns it into numbers, tables and figures."""

    params: EvalParams
    split: EvalSplit
    model: LoadedModel
    stride: int
    device: str
    passes: list[PassSpec]
    histograms: dict[str, list[ScoreHistogram]]
    """Per configuration key: one histogram per mosaic, in ``split.mosaics`` order."""
    records: list[PassRecord] = field(default_factory=list)
    patches: PatchScores | None = None
    panels: dict[str, Panels] = field(default_factory=dict)
    label_previews: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def configs(self) -> list[RunConfig]:
        return [c for p in self.passes for c in p.configs]


def pooled_score(hists: Sequence[ScoreHistogram]) -> tuple[float, float]:
    """(AUC, best Dice) of the pooled histogram, -inf where undefined: how 'best' rows are chosen."""
    from models.metrics.dice import dice_sweep

    pooled = sum(hists[1:], hists[0].copy())
    auc = pooled.auc()
    best = dice_sweep(pooled).best_dice
    return (-math.inf if auc is None else auc, -math.inf if best is None else best)


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


def evaluate(
    model: LoadedModel,
    split: EvalSplit,
    *,
    params: EvalParams,
    options: RunOptions | None = None,
    patch_cache: Path | None = None,
    progress: ProgressFn | None = None,
) -> EvalResult:
    """Run the patch-level scoring and every pass of the sweep over the split's mosaics."""
    options = options or RunOptions()
    started = time.perf_counter()
    device = next(model.net.parameters()).device
    card = model.card
    stride = output_stride(model)
    passes = plan_passes(params, stride)
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
        result.patches = score_patches(
            split.patches,
            model,
            cache_dir=patch_cache or Path(tempfile.mkdtemp(prefix="rcmseg-patches-", dir=options.workdir)),
            precision=params.precision,
            batch_size=options.batch_size or default_batch_size(device, card.window),
            progress=progress,
        )

    scratch = Path(tempfile.mkdtemp(prefix="rcmseg-eval-", dir=options.workdir))
    try:
        cache = _MosaicCache(options.memory_budget_bytes, scratch, card.pixel_size_um)
        total = _total_windows(split, passes, model)
        done = 0
        for spec in passes:
            done, previews = _run_pass(spec, result, cache, options, scratch, progress, done, total)
            _keep_best_panels(spec, result, previews)
        if params.panels:
            for mosaic in split.mosaics:
                _, labels = cache.get(mosaic)
                result.label_previews[mosaic.name] = preview(labels, PREVIEW_SIDE, mean=False)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result.seconds = time.perf_counter() - started
    return result


def _total_windows(split: EvalSplit, passes: list[PassSpec], model: LoadedModel) -> int:
    """Windows of every pass over every mosaic, from the headers (for the progress bar)."""
    total = 0
    for mosaic in split.mosaics:
        header = probe(mosaic.image, max_pixels=MAX_PIXELS)
        k = mosaic.downsample(model.card.pixel_size_um)
        for spec in passes:
            total += WindowGrid(
                height=header.height // k, width=header.width // k, window=model.card.window, step=spec.step
            ).count
    return total


def _run_pass(
    spec: PassSpec,
    result: EvalResult,
    cache: _MosaicCache,
    options: RunOptions,
    scratch: Path,
    progress: ProgressFn | None,
    done: int,
    total: int,
) -> tuple[int, list[dict[str, np.ndarray]]]:
    """One (method, step) pass over every mosaic; returns the windows done so far and, per sigma, the
    heat previews by mosaic."""
    params, model = result.params, result.model
    device = next(model.net.parameters()).device
    batch_size = options.batch_size or default_batch_size(device, model.card.window)
    seg = SegmentParams(
        step=spec.step,
        cam=spec.cam,
        precision=params.precision,
        mode=spec.mode,
        scorecam_top_k=params.scorecam_top_k,
        scorecam_skip_below=params.scorecam_skip_below,
    )
    previews: list[dict[str, np.ndarray]] = [{} for _ in spec.configs]
    for n, mosaic in enumerate(result.split.mosaics):
        image, labels = cache.get(mosaic)
        grid = WindowGrid(
            height=image.shape[0], width=image.shape[1], window=model.card.window, step=spec.step
        )
        stats = WindowStats()
        base = done

        def report(p: Progress, base: int = base, count: int = grid.count) -> None:
            if progress is not None:
                progress(Progress("windows", base + round(count * p.done / max(p.total, 1)), total))

        t0 = time.perf_counter()
        if spec.mode == "dense":
            heats = dense_sweep(
                image, model, sigmas=spec.sigmas_px, precision=params.precision, stats=stats, progress=report
            )
        else:
            heats = sweep_heatmaps(
                image,
                model,
                grid=grid,
                params=seg,
                sigmas=spec.sigmas_px,
                batch_size=batch_size,
                budget_bytes=options.memory_budget_bytes,
                workdir=scratch,
                stats=stats,
                progress=report,
            )
        seconds = time.perf_counter() - t0
        for config, heat, kept in zip(spec.configs, heats, previews, strict=True):
            result.histograms[config.key].append(mosaic_histogram(heat, labels, n_bins=params.n_bins))
            if params.panels:
                kept[mosaic.name] = preview(heat, PREVIEW_SIDE, mean=True)
        del heats
        done = base + grid.count
        if progress is not None:
            progress(Progress("windows", done, total))
        record = PassRecord(
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
        result.records.append(record)
        log.info(
            "%s %s step %d: mosaic %d/%d %s, %d windows, %d sigmas in %.1f s",
            spec.cam,
            spec.mode,
            spec.step,
            n + 1,
            len(result.split.mosaics),
            mosaic.name,
            stats.total,
            len(spec.configs),
            seconds,
        )
    return done, previews


def _keep_best_panels(spec: PassSpec, result: EvalResult, previews: list[dict[str, np.ndarray]]) -> None:
    """Keep the heat previews of this pass's best sigma if it beats the method's best so far."""
    if not result.params.panels or not result.split.mosaics:
        return
    for config, kept in zip(spec.configs, previews, strict=True):
        score = pooled_score(result.histograms[config.key])
        best = result.panels.get(config.method)
        if best is None or score > best.score:
            result.panels[config.method] = Panels(key=config.key, score=score, heat=kept)
