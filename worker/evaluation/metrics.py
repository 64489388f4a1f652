"""Metrics of every run of an evaluation: pooled and per-mosaic pixel metrics and the bootstrap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from models.metrics.bootstrap import BootstrapParams, BootstrapResult, bootstrap
from models.metrics.dice import threshold_bins
from models.metrics.pixel import PixelMetrics, pixel_metrics
from models.metrics.roc import ScoreHistogram
from worker.evaluation.protocol import EvalResult, RunConfig
from worker.progress import Progress, ProgressFn

CAM_TITLES = {"cam": "CAM", "scorecam": "ScoreCAM"}


@dataclass(frozen=True)
class RunSummary:
    """The metrics of one run (row of Table 2): pooled over the split, per mosaic, and bootstrapped."""

    config: RunConfig
    pooled: PixelMetrics
    per_mosaic: dict[str, PixelMetrics]
    boot: BootstrapResult | None
    benign_flagged: dict[str, float | None]
    """Per mosaic: the share of its benign pixels at or above the run's pooled best threshold (the false
    positive rate there; ``None`` without benign pixels). The one number left for an all-benign mosaic,
    whose AUC and Dice are undefined (the paper's Fig. 10)."""

    @property
    def score(self) -> tuple[float, float]:
        """How the best row of a method is chosen: pooled AUC, then best Dice."""
        auc, dice = self.pooled.auc, self.pooled.dice.best_dice
        return (-math.inf if auc is None else auc, -math.inf if dice is None else dice)


def summarise(result: EvalResult, *, progress: ProgressFn | None = None) -> list[RunSummary]:
    """Pixel metrics and bootstrap of every run, in plan order."""
    names = [m.name for m in result.split.mosaics]
    params = result.params
    configs = result.configs
    out = []
    for i, config in enumerate(configs):
        hists = result.histograms[config.key]
        pooled = sum(hists[1:], hists[0].copy())
        metrics = pixel_metrics(pooled)
        boot = None
        if params.bootstrap:
            boot = bootstrap(hists, params=BootstrapParams(n_resamples=params.bootstrap, seed=params.seed))
        out.append(
            RunSummary(
                config=config,
                pooled=metrics,
                per_mosaic={name: pixel_metrics(h) for name, h in zip(names, hists, strict=True)},
                boot=boot,
                benign_flagged={
                    name: flagged_share(h, metrics.dice.best_threshold)
                    for name, h in zip(names, hists, strict=True)
                },
            )
        )
        if progress is not None:
            progress(Progress("metrics", i + 1, len(configs)))
    return out


def flagged_share(hist: ScoreHistogram, threshold: float | None) -> float | None:
    """The share of benign pixels with a score at or above ``threshold`` (a bin edge)."""
    if threshold is None or hist.n_negative == 0:
        return None
    k = int(threshold_bins([threshold], hist.n_bins)[0])
    return float(hist.negative[k:].sum() / hist.n_negative)


def mosaic_dice(metrics: PixelMetrics) -> float | None:
    """A mosaic's best Dice, ``None`` without aspecific pixels: Dice is then 0 whenever anything is
    flagged and 0/0 otherwise, which says nothing about the segmentation."""
    return metrics.dice.best_dice if metrics.n_positive > 0 else None


def best_runs(summaries: Sequence[RunSummary]) -> dict[str, RunSummary]:
    """The best run of each method (``cam``, ``scorecam``, ``cam-dense``)."""
    best: dict[str, RunSummary] = {}
    for s in summaries:
        current = best.get(s.config.method)
        if current is None or s.score > current.score:
            best[s.config.method] = s
    return best


def sigma_text(config: RunConfig) -> str:
    return "none" if config.sigma_units is None else f"{config.sigma_units:g}"


def run_label(config: RunConfig, stride: int) -> str:
    """The paper's row label, with sigma's pixel value beside its stride units."""
    step = f"Step size: {config.step}" if config.mode == "exact" else f"Dense (step {config.step})"
    if config.sigma_units is None:
        return f"{step}, (no Gaussian)"
    return f"{step}, {config.sigma_units:g} ({config.sigma_px:g} px)"
