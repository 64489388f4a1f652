"""The paper's pixel metrics of one mosaic or a pooled set: AUC and the Dice sweep over labelled pixels.

They are computed from score histograms (:mod:`models.metrics.roc`, :mod:`models.metrics.dice`); the bootstrap
is in :mod:`models.metrics.bootstrap` and the patch-level metrics in :mod:`models.metrics.patch`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.metrics.dice import DICE_THRESHOLDS, DiceSweep, dice_sweep
from models.metrics.roc import ScoreHistogram


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
