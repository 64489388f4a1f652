"""Bootstrap over mosaics: mean ROC with a percentile band, and confidence intervals of AUC and best Dice.

As in the paper (Fig. 11), each resample draws as many mosaics as the test set holds, with replacement, and
pools their pixels. Pooling is a sum of per-mosaic histograms, so a resample is a row of mosaic multiplicities
``W[r, m]`` and its histogram is ``W @ H`` for the stacked per-mosaic histograms ``H`` (mosaics x bins): a
thousand resamples of a few dozen mosaics are a few matrix products, done in blocks to bound memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import InvalidParameter
from models.metrics.dice import DICE_THRESHOLDS, dice_sweep, threshold_bins
from models.metrics.roc import ScoreHistogram


@dataclass(frozen=True, kw_only=True)
class BootstrapParams:
    """How to resample: ``n_resamples`` draws from a numpy Generator seeded with ``seed``; the mean ROC is
    reported at ``n_fpr`` evenly spaced false-positive rates; ``block`` resamples are held in memory at once.
    """

    n_resamples: int = 1000
    seed: int = 0
    confidence: float = 0.95
    n_fpr: int = 201
    thresholds: tuple[float, ...] = tuple(float(t) for t in DICE_THRESHOLDS)
    empty_dice: float = float("nan")
    block: int = 100

    def __post_init__(self) -> None:
        if self.n_resamples < 1:
            raise InvalidParameter(f"n_resamples must be >= 1, got {self.n_resamples}")
        if not 0 < self.confidence < 1:
            raise InvalidParameter(f"confidence must be in (0, 1), got {self.confidence}")
        if self.n_fpr < 2:
            raise InvalidParameter(f"n_fpr must be >= 2, got {self.n_fpr}")
        if self.block < 1:
            raise InvalidParameter(f"block must be >= 1, got {self.block}")
        if not self.thresholds:
            raise InvalidParameter("at least one Dice threshold is needed")


@dataclass(frozen=True)
class BootstrapResult:
    """Per-resample statistics (NaN where a resample holds one class only) and their summaries.

    ``tpr_low``/``tpr_high`` and the ``*_ci`` pairs are the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` percentiles over the resamples where the statistic is defined; a ``*_ci`` is
    ``None`` when it is defined in no resample.
    """

    multiplicity: npt.NDArray[np.int64]
    """(resamples, mosaics): how many times each mosaic was drawn in each resample."""
    fpr_grid: npt.NDArray[np.float64]
    tpr: npt.NDArray[np.float64]
    """(resamples, len(fpr_grid)): each resample's ROC read at the grid."""
    tpr_mean: npt.NDArray[np.float64]
    tpr_low: npt.NDArray[np.float64]
    tpr_high: npt.NDArray[np.float64]
    auc: npt.NDArray[np.float64]
    auc_ci: tuple[float, float] | None
    best_dice: npt.NDArray[np.float64]
    best_threshold: npt.NDArray[np.float64]
    best_dice_ci: tuple[float, float] | None
    pooled_auc: float | None
    """AUC of all mosaics pooled once (the point estimate the intervals go with)."""
    pooled_best_dice: float | None
    confidence: float

    @property
    def n_undefined(self) -> int:
        """Resamples that drew one class only (no ROC, no AUC)."""
        return int(np.isnan(self.auc).sum())

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (undefined values are ``None``), without the per-resample arrays."""

        def listed(values: npt.NDArray[np.float64]) -> list[float | None]:
            return [None if np.isnan(v) else float(v) for v in values]

        return {
            "n_resamples": int(self.auc.size),
            "n_mosaics": int(self.multiplicity.shape[1]),
            "n_undefined": self.n_undefined,
            "confidence": self.confidence,
            "pooled_auc": self.pooled_auc,
            "auc_ci": None if self.auc_ci is None else list(self.auc_ci),
            "pooled_best_dice": self.pooled_best_dice,
            "best_dice_ci": None if self.best_dice_ci is None else list(self.best_dice_ci),
            "roc": {
                "fpr": [float(f) for f in self.fpr_grid],
                "tpr_mean": listed(self.tpr_mean),
                "tpr_low": listed(self.tpr_low),
                "tpr_high": listed(self.tpr_high),
            },
        }


def stack_histograms(
    histograms: Sequence[ScoreHistogram],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``(positive, negative)`` arrays of shape (mosaics, bins) of histograms that share a bin count."""
    if not histograms:
        raise InvalidParameter("at least one mosaic histogram is needed")
    n_bins = {h.n_bins for h in histograms}
    if len(n_bins) != 1:
        raise InvalidParameter(f"mosaic histograms have different bin counts: {sorted(n_bins)}")
    return np.stack([h.positive for h in histograms]), np.stack([h.negative for h in histograms])


def resample_multiplicity(n_mosaics: int, n_resamples: int, seed: int) -> npt.NDArray[np.int64]:
    """(resamples, mosaics) draw counts: each row is ``n_mosaics`` draws with replacement."""
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_mosaics, size=(n_resamples, n_mosaics))
    flat = drawn + n_mosaics * np.arange(n_resamples)[:, None]
    counts = np.bincount(flat.reshape(-1), minlength=n_resamples * n_mosaics)
    return counts.reshape(n_resamples, n_mosaics).astype(np.int64)


def roc_on_grid(
    tp: npt.NDArray[np.float64], fp: npt.NDArray[np.float64], fpr_grid: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """TPR at ``fpr_grid`` of ROC curves given as cumulative counts from the top bin down (rows of ``tp``
    and ``fp``, each ending at the class total); NaN rows where a class is absent.

    Where a curve rises vertically at a grid FPR, the top of the rise is read (the best TPR at that FPR).
    """
    out = np.full((tp.shape[0], fpr_grid.size), np.nan)
    for r in range(tp.shape[0]):
        p_total, n_total = tp[r, -1], fp[r, -1]
        if p_total == 0 or n_total == 0:
            continue
        fpr = np.concatenate([[0.0], fp[r] / n_total])
        tpr = np.concatenate([[0.0], tp[r] / p_total])
        # The last point at or left of each grid FPR is the top of any vertical rise there; between points,
        # interpolate towards the next one (the foot of the next rise).
        left = np.searchsorted(fpr, fpr_grid, side="right") - 1
        right = np.minimum(left + 1, fpr.size - 1)
        span = fpr[right] - fpr[left]
        frac = np.where(span > 0, (fpr_grid - fpr[left]) / np.where(span > 0, span, 1.0), 0.0)
        out[r] = tpr[left] + frac * (tpr[right] - tpr[left])
    return out


def _auc_from_counts(
    pos: npt.NDArray[np.float64], neg: npt.NDArray[np.float64], tp: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Trapezoidal AUC of top-down histogram rows with cumulative positives ``tp``, as
    :func:`models.metrics.roc.binned_auc`: each negative counts the positives above it and half those
    beside it."""
    area = np.einsum("ij,ij->i", tp, neg) - 0.5 * np.einsum("ij,ij->i", pos, neg)
    total = tp[:, -1] * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, area / np.where(total > 0, total, 1.0), np.nan)


def _best_dice(
    tp: npt.NDArray[np.float64], fp: npt.NDArray[np.float64], from_top: npt.NDArray[np.intp], empty: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Best Dice over the thresholds at cumulative positions ``from_top``: (dice, argbest, defined)."""
    tp_t, fp_t = tp[:, from_top], fp[:, from_top]
    denom = tp_t + fp_t + tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(denom > 0, 2.0 * tp_t / np.where(denom > 0, denom, 1.0), empty)
    defined = np.asarray(~np.isnan(dice).all(axis=1))
    best = np.argmax(np.where(np.isnan(dice), -np.inf, dice), axis=1)  # first maximum: lowest threshold
    return np.asarray(dice[np.arange(dice.shape[0]), best]), best, defined


def _interval(values: npt.NDArray[np.float64], confidence: float) -> tuple[float, float] | None:
    ok = values[~np.isnan(values)]
    if ok.size == 0:
        return None
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(ok, [tail, 100.0 - tail])
    return float(low), float(high)


def bootstrap(
    histograms: Sequence[ScoreHistogram], *, params: BootstrapParams | None = None
) -> BootstrapResult:
    """Resample the mosaics ``params.n_resamples`` times and summarise ROC, AUC and best Dice."""
    params = params or BootstrapParams()
    pos_stack, neg_stack = stack_histograms(histograms)
    n_bins = histograms[0].n_bins
    edge_index = threshold_bins(params.thresholds, n_bins)
    thresholds = edge_index / n_bins
    fpr_grid = np.linspace(0.0, 1.0, params.n_fpr)
    multiplicity = resample_multiplicity(len(histograms), params.n_resamples, params.seed)

    # Bins from the top down, so that one cumulative sum per resample gives TP and FP at every threshold.
    pos_desc = pos_stack[:, ::-1].astype(np.float64)  # exact below 2**53 pixels
    neg_desc = neg_stack[:, ::-1].astype(np.float64)
    from_top = n_bins - edge_index  # heat >= k / n_bins is the top n_bins - k + 1 bins
    tpr = np.empty((params.n_resamples, fpr_grid.size))
    auc = np.empty(params.n_resamples)
    best_dice = np.empty(params.n_resamples)
    best_threshold = np.empty(params.n_resamples)
    for start in range(0, params.n_resamples, params.block):
        rows = slice(start, start + params.block)
        weights = multiplicity[rows].astype(np.float64)
        pos, neg = weights @ pos_desc, weights @ neg_desc
        tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        tpr[rows] = roc_on_grid(tp, fp, fpr_grid)
        auc[rows] = _auc_from_counts(pos, neg, tp)
        dice, best, defined = _best_dice(tp, fp, from_top, params.empty_dice)
        best_dice[rows] = np.where(defined, dice, np.nan)
        best_threshold[rows] = np.where(defined, thresholds[best], np.nan)

    pooled = ScoreHistogram.from_counts(pos_stack.sum(axis=0), neg_stack.sum(axis=0))
    defined_rows = ~np.isnan(auc)
    tail = 50.0 * (1.0 - params.confidence)
    if defined_rows.any():
        tpr_mean = tpr[defined_rows].mean(axis=0)
        tpr_low, tpr_high = np.percentile(tpr[defined_rows], [tail, 100.0 - tail], axis=0)
    else:
        tpr_mean = tpr_low = tpr_high = np.full(fpr_grid.size, np.nan)
    return BootstrapResult(
        multiplicity=multiplicity,
        fpr_grid=fpr_grid,
        tpr=tpr,
        tpr_mean=tpr_mean,
        tpr_low=tpr_low,
        tpr_high=tpr_high,
        auc=auc,
        auc_ci=_interval(auc, params.confidence),
        best_dice=best_dice,
        best_threshold=best_threshold,
        best_dice_ci=_interval(best_dice, params.confidence),
        pooled_auc=pooled.auc(),
        pooled_best_dice=dice_sweep(pooled, thresholds=thresholds, empty=params.empty_dice).best_dice,
        confidence=params.confidence,
    )


@dataclass(frozen=True)
class PairedDifference:
    """Run A minus run B on the same mosaics: pooled AUC and best Dice, each with the interval of the
    difference over resamples that draw the same mosaics for both (``None`` where undefined)."""

    auc: float | None
    auc_ci: tuple[float, float] | None
    best_dice: float | None
    best_dice_ci: tuple[float, float] | None


def paired_difference(
    a: Sequence[ScoreHistogram], b: Sequence[ScoreHistogram], *, params: BootstrapParams | None = None
) -> PairedDifference:
    """A minus B with a paired bootstrap: ``a[m]`` and ``b[m]`` are the two runs' histograms of mosaic ``m``,
    and one seed draws the same mosaics for both in every resample, so the interval is of the difference
    itself, not of two independent estimates."""
    if len(a) != len(b):
        raise InvalidParameter(f"paired runs need the same mosaics, got {len(a)} and {len(b)}")
    params = params or BootstrapParams()
    ra, rb = bootstrap(a, params=params), bootstrap(b, params=params)
    auc = None if ra.pooled_auc is None or rb.pooled_auc is None else ra.pooled_auc - rb.pooled_auc
    dice_a, dice_b = ra.pooled_best_dice, rb.pooled_best_dice
    return PairedDifference(
        auc=auc,
        auc_ci=_interval(ra.auc - rb.auc, params.confidence),
        best_dice=None if dice_a is None or dice_b is None else dice_a - dice_b,
        best_dice_ci=_interval(ra.best_dice - rb.best_dice, params.confidence),
    )
