"""Figures of an evaluation: the bootstrap ROC (the paper's Fig. 11, with the patch-level ROC of its Fig. 4)
and one panel per mosaic like its Figs. 5 to 10 (ground truth, heat map on labelled pixels only, heat map
everywhere, the mosaic's ROC), for the best run of each method.

Figures are built with matplotlib's object-oriented ``Figure``: no pyplot state, no backend switch, so
nothing here changes how the rest of the process draws.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from models.labels import ASPECIFIC
from models.metrics.patch import patch_metrics, patch_roc_curve
from models.metrics.roc import ScoreHistogram
from worker.evaluation.metrics import RunSummary, best_runs, mosaic_dice
from worker.evaluation.protocol import EvalResult
from worker.io.colormap import HEATMAP_COLORMAP
from worker.progress import Progress, ProgressFn

COLOURS = {"cam": "tab:red", "scorecam": "tab:blue", "cam-dense": "tab:orange"}
GROUND_TRUTH = {
    "unlabelled": (0.85, 0.85, 0.85),
    "benign": (0.27, 0.51, 0.71),
    "aspecific": (0.84, 0.15, 0.16),
}
ZOOM = ((0.0, 0.2), (0.8, 1.0))
"""The paper's inset: the upper left corner, high sensitivity and specificity."""


def _save(fig: Figure, path: Path) -> None:
    """Write the figure beside ``path`` and rename it into place, so a reader never sees half a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)


def _curve_label(s: RunSummary, stride: int) -> str:
    """``CAM, step 25, sigma 5 x 32 px: AUC 0.969 [0.951, 0.978]``."""
    c = s.config
    name = {"cam": "CAM", "scorecam": "ScoreCAM", "cam-dense": "CAM dense"}.get(c.method, c.method)
    sigma = "no Gaussian" if c.sigma_units is None else f"sigma {c.sigma_units:g} x {stride} px"
    text = f"{name}, step {c.step}, {sigma}"
    if s.pooled.auc is not None:
        text += f": AUC {s.pooled.auc:.3f}"
        if s.boot is not None and s.boot.auc_ci is not None:
            text += f" [{s.boot.auc_ci[0]:.3f}, {s.boot.auc_ci[1]:.3f}]"
    return text


def write_roc_figure(path: Path, result: EvalResult, summaries: Sequence[RunSummary]) -> None:
    """Mean bootstrap ROC (solid) and its 95% band (dashed) of each method's best run, the patch-level ROC,
    and a zoom on the upper left corner."""
    fig = Figure(figsize=(12, 5.4))
    axes = fig.subplots(1, 2)
    for ax, zoom in zip(axes, (False, True), strict=True):
        for method, s in best_runs(summaries).items():
            colour = COLOURS.get(method, "tab:green")
            label = _curve_label(s, result.stride) if not zoom else None
            if s.boot is not None and s.boot.auc_ci is not None:
                b = s.boot
                ax.plot(b.fpr_grid, b.tpr_mean, color=colour, lw=1.8, label=label)
                ax.plot(b.fpr_grid, b.tpr_low, color=colour, lw=1.0, ls="--")
                ax.plot(b.fpr_grid, b.tpr_high, color=colour, lw=1.0, ls="--")
            else:
                pooled = sum(result.histograms[s.config.key][1:], result.histograms[s.config.key][0].copy())
                roc = pooled.roc_curve()
                if roc is not None:
                    ax.plot(roc.fpr, roc.tpr, color=colour, lw=1.8, label=label)
        if result.patches is not None:
            roc = patch_roc_curve(result.patches.prob, result.patches.label)
            m = patch_metrics(result.patches.prob, result.patches.label)
            if roc is not None and m.auc is not None:
                label = f"patch level ({m.n} patches): AUC {m.auc:.3f}" if not zoom else None
                ax.plot(roc.fpr, roc.tpr, color="black", lw=1.2, label=label)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        if zoom:
            ax.set_xlim(*ZOOM[0])
            ax.set_ylim(*ZOOM[1])
            ax.set_title("upper left corner")
        else:
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.0)
            n = len(result.split.mosaics)
            boot = result.params.bootstrap
            ax.set_title(
                f"{result.split.name} split, {n} mosaics"
                + (f": mean of {boot} bootstrap ROCs, dashed 95% band" if boot else "")
            )
            ax.legend(loc="lower right", fontsize=7.5)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)


def ground_truth_rgb(labels: np.ndarray) -> np.ndarray:
    """Unlabelled grey, benign blue, aspecific red."""
    rgb = np.empty((*labels.shape, 3), dtype=np.float32)
    rgb[:] = GROUND_TRUTH["unlabelled"]
    rgb[(labels > 0) & (labels != ASPECIFIC)] = GROUND_TRUTH["benign"]
    rgb[labels == ASPECIFIC] = GROUND_TRUTH["aspecific"]
    return rgb


def write_mosaic_panel(
    path: Path,
    *,
    title: str,
    labels: np.ndarray,
    heat: np.ndarray,
    summary: RunSummary,
    mosaic: str,
    histogram: ScoreHistogram,
) -> None:
    """(a) ground truth, (b) heat map on labelled pixels only, (c) heat map everywhere, (d) ROC."""
    fig = Figure(figsize=(17, 4.6))
    axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1, 1, 1, 1.05]})
    axes[0].imshow(ground_truth_rgb(labels), interpolation="nearest")
    axes[0].legend(
        handles=[Patch(color=c, label=name) for name, c in GROUND_TRUTH.items()], loc="lower left", fontsize=7
    )
    axes[0].set_title("(a) ground truth")
    cmap = colormaps[HEATMAP_COLORMAP].with_extremes(bad=GROUND_TRUTH["unlabelled"])
    axes[1].imshow(np.ma.masked_where(labels == 0, heat), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title("(b) heat map, labelled pixels")
    shown = axes[2].imshow(heat, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
    axes[2].set_title("(c) heat map, all pixels")
    fig.colorbar(shown, ax=axes[2], fraction=0.046, pad=0.02)
    for ax in axes[:3]:
        ax.set_axis_off()
    _draw_mosaic_roc(axes[3], summary, mosaic, histogram)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)


def _draw_mosaic_roc(ax: Axes, summary: RunSummary, mosaic: str, histogram: ScoreHistogram) -> None:
    """Panel (d): the mosaic's ROC, or why its AUC is undefined, with its best Dice."""
    metrics = summary.per_mosaic[mosaic]
    roc = histogram.roc_curve()
    dice, threshold = mosaic_dice(metrics), metrics.dice.best_threshold
    dice_text = "Dice undefined" if dice is None else f"best Dice {dice:.3f} at {threshold:.2f}"
    flagged = summary.benign_flagged[mosaic]
    run_t = summary.pooled.dice.best_threshold
    if flagged is not None and run_t is not None:
        flagged_text = f"benign pixels >= {run_t:.2f} (the run's threshold): {flagged:.2%}"
    else:
        flagged_text = ""
    if roc is not None and metrics.auc is not None:
        ax.plot(roc.fpr, roc.tpr, color="tab:red", lw=1.6)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
        ax.set_title(f"(d) ROC: AUC {metrics.auc:.3f}, {dice_text}", fontsize=9)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    else:
        only = "benign" if metrics.n_positive == 0 else "aspecific"
        ax.text(
            0.5,
            0.5,
            f"AUC undefined:\nonly {only} pixels are labelled\n\n{dice_text}\n{flagged_text}",
            ha="center",
            va="center",
            fontsize=10,
        )
        ax.set_axis_off()
        ax.set_title("(d) ROC")


def write_figures(
    out: Path, result: EvalResult, summaries: Sequence[RunSummary], *, progress: ProgressFn | None = None
) -> list[str]:
    """``roc.png`` and ``panels/{method}/{mosaic}.png``; returns their paths relative to ``out``."""
    written = []
    write_roc_figure(out / "roc.png", result, summaries)
    written.append("roc.png")
    by_key = {s.config.key: s for s in summaries}
    names = [m.name for m in result.split.mosaics]
    jobs = [(method, panels, name) for method, panels in result.panels.items() for name in names]
    for i, (method, panels, name) in enumerate(jobs):
        s = by_key[panels.key]
        path = out / "panels" / method / f"{name}.png"
        write_mosaic_panel(
            path,
            title=f"{name}: {_curve_label(s, result.stride).split(': AUC')[0]}",
            labels=result.label_previews[name],
            heat=panels.heat[name],
            summary=s,
            mosaic=name,
            histogram=result.histograms[panels.key][names.index(name)],
        )
        written.append(str(path.relative_to(out)))
        if progress is not None:
            progress(Progress("figures", i + 1, len(jobs)))
    return written
