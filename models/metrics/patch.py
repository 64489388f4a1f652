"""Patch-level classification metrics, exact, on the few thousand patch probabilities of a split.

The paper's patch test (its Fig. 4) and the validation metrics of training both come from here: one
argument order, ``(scores, labels)``, everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.errors import InvalidParameter
from models.metrics.roc import RocCurve


@dataclass(frozen=True)
class PatchMetrics:
    """Patch classification: exact AUC (``None`` with one class only), and accuracy, sensitivity and
    specificity at ``threshold`` (``None`` where the class they need is absent)."""

    n: int
    n_positive: int
    auc: float | None
    accuracy: float
    sensitivity: float | None
    specificity: float | None
    threshold: float

    def as_dict(self) -> dict[str, Any]:
        """The names a model card and the training log use (the positive class is aspecific)."""
        return {
            "auc": self.auc,
            "accuracy": self.accuracy,
            "sensitivity": self.sensitivity,
            "specificity": self.specificity,
            "n": self.n,
            "n_aspecific": self.n_positive,
        }


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
    pred = s > threshold
    return PatchMetrics(
        n=int(s.size),
        n_positive=int(y.sum()),
        auc=patch_auc(s, y),
        accuracy=float((pred == y).mean()),
        sensitivity=float(pred[y].mean()) if y.any() else None,
        specificity=float((~pred[~y]).mean()) if not y.all() else None,
        threshold=float(threshold),
    )
