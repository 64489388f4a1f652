"""The paper's evaluation: per-mosaic and pooled pixel metrics, and patch-level classification metrics.

Pixel metrics are computed from score histograms (:mod:`models.metrics.roc`, :mod:`models.metrics.dice`); the bootstrap is in
:mod:`models.metrics.bootstrap`. Patch metrics work on the few thousand patch probabilities directly and are exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import InvalidParameter
from models.metrics.dice import DICE_THRESHOLDS, DiceSweep, dice_sweep
from models.metrics.roc import RocCurve, ScoreHistogram


def _json_float(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


@dataclass(frozen=True)
class PixelMetrics:
    """AUC (``None`` where one class is absent: the paper's "cannot be calculated") and the Dice sweep of one
    mosaic or of a pooled set."""

    n_positive: int
    n_negative: int
    auc: float | None
    auc_error_bound: float | None
    dice: DiceSweep

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: undefined values are ``None``."""
        return {
            "n_positive": self.n_positive,
            "n_negative": self.n_negative,
            "auc": self.auc,
            "auc_error_bound": self.auc_error_bound,
            "best_threshold": self.dice.best_threshold,
            "best_dice": self.dice.best_dice,
            "dice_thresholds": [float(t) for t in self.dice.thresholds],
            "dice": [_json_float(float(d)) for d in self.dice.dice],
        }


def pixel_metrics(
    hist: ScoreHistogram, *, thresholds: npt.ArrayLike = DICE_THRESHOLDS, empty_dice: float = np.nan
) -> PixelMetrics:
    """AUC, its error bound and the Dice sweep of a histogram."""
    return PixelMetrics(
        n_positive=hist.n_positive,
        n_negative=hist.n_negative,
        auc=hist.auc(),
        auc_error_bound=hist.auc_error_bound(),
        dice=dice_sweep(hist, thresholds=thresholds, empty=empty_dice),
    )


def per_mosaic_metrics(
    histograms: Mapping[str, ScoreHistogram],
    *,
    thresholds: npt.ArrayLike = DICE_THRESHOLDS,
    empty_dice: float = np.nan,
) -> dict[str, PixelMetrics]:
    """:func:`pixel_metrics` of each named mosaic."""
    return {
        name: pixel_metrics(hist, thresholds=thresholds, empty_dice=empty_dice)
        for name, hist in histograms.items()
    }


@dataclass(frozen=True)
class PatchMetrics:
    """Patch classification: exact AUC (``None`` with one class only) and accuracy at ``threshold``."""

    n: int
    n_positive: int
    auc: float | None
    accuracy: float
    threshold: float


def _patch_arrays(
    scores: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y_raw = np.asarray(labels)
    if y_raw.size != s.size:
        raise InvalidParameter(f"{s.size} scores but {y_raw.size} labels")
    if s.size == 0:
        raise InvalidParameter("no patches")
    if not np.isfinite(s).all():
        raise InvalidParameter("patch scores must be finite")
    if y_raw.dtype != np.bool_ and not np.isin(y_raw, (0, 1)).all():
        raise InvalidParameter("patch labels must be boolean or 0/1")
    return s, y_raw.reshape(-1).astype(np.bool_)


def patch_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float | None:
    """Exact ROC AUC (the Mann-Whitney statistic, ties counted 1/2); ``None`` with one class only."""
    s, y = _patch_arrays(scores, labels)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    first_rank = np.cumsum(counts) - counts + 1
    mid_rank = first_rank + (counts - 1) / 2.0
    rank_sum = mid_rank[inverse][y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def patch_roc_curve(scores: npt.ArrayLike, labels: npt.ArrayLike) -> RocCurve | None:
    """Exact ROC through every distinct score (positive when ``score >= threshold``); ``None`` with one
    class only."""
    s, y = _patch_arrays(scores, labels)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    last_of_value = np.append(np.flatnonzero(np.diff(s_sorted)), s_sorted.size - 1)
    tp = np.cumsum(y_sorted)[last_of_value]
    fp = (last_of_value + 1) - tp
    return RocCurve(
        fpr=np.concatenate([[0.0], fp / n_neg]),
        tpr=np.concatenate([[0.0], tp / n_pos]),
        thresholds=np.concatenate([[np.inf], s_sorted[last_of_value]]),
    )


def patch_metrics(scores: npt.ArrayLike, labels: npt.ArrayLike, *, threshold: float = 0.5) -> PatchMetrics:
    """AUC and accuracy of patch probabilities. As in the paper, a patch is called aspecific when its score
    is greater than ``threshold`` (0.5) and benign otherwise."""
    if not 0 <= threshold <= 1:
        raise InvalidParameter(f"threshold must be in [0, 1], got {threshold}")
    s, y = _patch_arrays(scores, labels)
    return PatchMetrics(
        n=int(s.size),
        n_positive=int(y.sum()),
        auc=patch_auc(s, y),
        accuracy=float(((s > threshold) == y).mean()),
        threshold=float(threshold),
    )
