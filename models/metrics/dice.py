"""Dice of the thresholded heat map over labelled pixels, swept over thresholds, from score histograms.

The paper computes Dice "for all thresholds between 0 and 1 in increments of 0.02" and keeps the best. A
pixel is predicted aspecific when ``heat >= t``; with the bins of :mod:`models.metrics.roc` and a threshold
on a bin edge ``k / n_bins``, the predicted positives are exactly bins ``k..n_bins``, so

    TP(t) = sum_{b >= k} pos_b,   FP(t) = sum_{b >= k} neg_b,   FN(t) = P - TP(t),
    Dice(t) = 2 TP / (2 TP + FP + FN) = 2 TP / (TP + FP + P).

Unlabelled pixels (code 0) never enter the histograms and so never count.

Undefined Dice: when there is no positive pixel and no pixel predicted positive (``TP + FP + P == 0``) Dice is
0/0. It is reported as NaN by default rather than 1, so that an all-benign mosaic thresholded high enough does
not score a perfect Dice for predicting nothing, and a best-threshold search does not settle on such a
threshold. ``empty=1.0`` gives the other common convention.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.errors import InvalidParameter
from models.metrics.roc import ScoreHistogram

DICE_THRESHOLDS: npt.NDArray[np.float64] = np.arange(51, dtype=np.float64) / 50
"""0, 0.02, ..., 1: the paper's 51 thresholds."""

_SNAP = 1e-9
"""How far a threshold may be from a bin edge and still be taken as that edge (float noise of linspace)."""


@dataclass(frozen=True)
class DiceSweep:
    """Dice at each threshold (NaN where undefined) and the best of them.

    ``best_threshold``/``best_dice`` are ``None`` when Dice is undefined at every threshold; ties go to the
    lowest threshold.
    """

    thresholds: npt.NDArray[np.float64]
    dice: npt.NDArray[np.float64]
    best_threshold: float | None
    best_dice: float | None


def threshold_bins(thresholds: npt.ArrayLike, n_bins: int) -> npt.NDArray[np.intp]:
    """The bin-edge index ``k`` of each threshold ``t = k / n_bins``; raises for a threshold off the edges."""
    t = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if t.size == 0:
        raise InvalidParameter("at least one threshold is needed")
    if not np.all((t >= 0) & (t <= 1)):
        raise InvalidParameter(f"thresholds must lie in [0, 1], got {t.min()}..{t.max()}")
    k = np.rint(t * n_bins).astype(np.intp)
    off = np.abs(k / n_bins - t) > _SNAP
    if off.any():
        raise InvalidParameter(
            f"threshold {t[off][0]} is not a multiple of 1/{n_bins}; choose a bin count it divides"
        )
    return k


def dice_from_counts(
    positive: npt.NDArray[np.integer] | npt.NDArray[np.floating],
    negative: npt.NDArray[np.integer] | npt.NDArray[np.floating],
    edge_index: npt.NDArray[np.intp],
    *,
    empty: float = np.nan,
) -> npt.NDArray[np.float64]:
    """Dice at bin edges ``edge_index`` of histograms along the last axis; works on stacks of histograms.

    Returns an array of shape ``positive.shape[:-1] + edge_index.shape``.
    """
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    tp = np.cumsum(pos[..., ::-1], axis=-1)[..., ::-1][..., edge_index]
    fp = np.cumsum(neg[..., ::-1], axis=-1)[..., ::-1][..., edge_index]
    p = pos.sum(axis=-1, keepdims=True)
    denom = tp + fp + p
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * tp / np.where(denom > 0, denom, 1.0), empty)


def best_of(
    thresholds: npt.NDArray[np.float64], dice: npt.NDArray[np.float64]
) -> tuple[float | None, float | None]:
    """``(threshold, dice)`` at the highest Dice, lowest threshold on ties; ``(None, None)`` if all NaN."""
    if np.isnan(dice).all():
        return None, None
    i = int(np.nanargmax(dice))
    return float(thresholds[i]), float(dice[i])


def dice_sweep(
    hist: ScoreHistogram,
    *,
    thresholds: npt.ArrayLike = DICE_THRESHOLDS,
    empty: float = np.nan,
) -> DiceSweep:
    """Dice of ``heat >= t`` against the aspecific label at each threshold, and the best threshold."""
    k = threshold_bins(thresholds, hist.n_bins)
    dice = dice_from_counts(hist.positive, hist.negative, k, empty=empty)
    t = k / hist.n_bins
    best_t, best_d = best_of(t, dice)
    return DiceSweep(thresholds=t, dice=dice, best_threshold=best_t, best_dice=best_d)
