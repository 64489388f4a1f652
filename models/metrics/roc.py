"""Pixel-level ROC and AUC from fixed-bin score histograms.

A test set holds hundreds of millions of labelled pixels, far too many to sort. Instead every mosaic's
heat map is reduced to two histograms of the score, one for aspecific (positive) pixels and one for benign
(negative) pixels. Histograms add, so a test set's histogram is the sum of its mosaics', and a bootstrap
resample's is a weighted sum of the same.

With ``n = n_bins`` and ``lower_edges = arange(n + 1) / n``, bin ``b < n`` holds the scores ``s`` with
``b / n <= s < (b + 1) / n`` and the top bin ``n`` holds the scores equal to 1, so that every threshold
``t = k / n`` (1 included) splits the bins exactly: ``heat >= t`` is bins ``k..n``. Comparisons are made in
the score array's own float dtype (float32 for float16 maps), so ``heat >= t`` computed on the heat map and
decided from the bins agree.

Error of the binned AUC: the ROC through the bin edges is the exact ROC of the pixels except that pairs of
a positive and a negative pixel falling in the same bin count as half-correct (a tie), whereas the exact AUC
counts each such pair as 1, 1/2 or 0. Each pair is off by at most 1/2, so

    |AUC_binned - AUC_exact| <= sum_b pos_b * neg_b / (2 * P * N)

which :meth:`ScoreHistogram.auc_error_bound` reports for the histogram at hand. The bound is attained only
when every within-bin pair is ordered the same way; where the pixels of a bin share one value (an 8-bit heat
map, say) those pairs are true ties and the binned AUC is exact for them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.errors import InvalidParameter
from models.labels import ASPECIFIC, LABEL_CODES

DEFAULT_BINS = 10_000
"""Bins of width 1e-4 (plus the top bin for scores of exactly 1). A multiple of 50, so the Dice thresholds
0, 0.02, ..., 1 fall on bin edges."""

_CHUNK = 1 << 22
"""Pixels binned per step, which bounds the temporary memory of :meth:`ScoreHistogram.add`."""


@dataclass(frozen=True)
class RocCurve:
    """ROC points in order of decreasing threshold, from (0, 0) to (1, 1).

    ``thresholds[i]`` is the score a pixel must reach (``>=``) to count as positive at point ``i``; the
    first threshold is ``inf`` (nothing positive).
    """

    fpr: npt.NDArray[np.float64]
    tpr: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]


class ScoreHistogram:
    """Counts of scores in [0, 1] per class over ``n_bins`` equal bins and a top bin for a score of 1;
    mergeable with ``+`` and picklable.

    ``positive[b]`` and ``negative[b]`` (``b`` in ``0..n_bins``) are the numbers of positive (aspecific) and
    negative (benign) pixels whose score lies in bin ``b``.
    """

    def __init__(self, n_bins: int = DEFAULT_BINS) -> None:
        if isinstance(n_bins, bool) or not isinstance(n_bins, int | np.integer) or n_bins < 1:
            raise InvalidParameter(f"n_bins must be an integer >= 1, got {n_bins!r}")
        self.n_bins = int(n_bins)
        self.positive = np.zeros(self.n_bins + 1, dtype=np.int64)
        self.negative = np.zeros(self.n_bins + 1, dtype=np.int64)

    @classmethod
    def from_counts(cls, positive: npt.ArrayLike, negative: npt.ArrayLike) -> ScoreHistogram:
        """A histogram holding the given ``n_bins + 1`` counts per class (for example, ones read back
        from a result file)."""
        pos = np.asarray(positive)
        neg = np.asarray(negative)
        if pos.ndim != 1 or pos.shape != neg.shape or pos.size < 2:
            raise InvalidParameter(
                f"counts must be two 1-D arrays of one length >= 2, got {pos.shape} and {neg.shape}"
            )
        for name, arr in (("positive", pos), ("negative", neg)):
            if not np.issubdtype(arr.dtype, np.integer) or (arr < 0).any():
                raise InvalidParameter(f"{name} counts must be non-negative integers")
        hist = cls(int(pos.size) - 1)
        hist.positive[:] = pos
        hist.negative[:] = neg
        return hist

    @property
    def lower_edges(self) -> npt.NDArray[np.float64]:
        """The lowest score of each of the ``n_bins + 1`` bins, 0 to 1."""
        return np.arange(self.n_bins + 1, dtype=np.float64) / self.n_bins

    @property
    def n_positive(self) -> int:
        return int(self.positive.sum())

    @property
    def n_negative(self) -> int:
        return int(self.negative.sum())

    @property
    def defined(self) -> bool:
        """Whether both classes are present, so that ROC and AUC exist."""
        return self.n_positive > 0 and self.n_negative > 0

    def add(
        self,
        scores: npt.ArrayLike,
        labels: npt.ArrayLike,
        *,
        ignore: npt.ArrayLike | None = None,
    ) -> ScoreHistogram:
        """Count ``scores`` (in [0, 1]) under ``labels`` (true = positive); pixels where ``ignore`` is true
        are skipped. Returns ``self`` so calls chain."""
        s = np.asarray(scores)
        y = np.asarray(labels)
        if s.shape != y.shape:
            raise InvalidParameter(f"scores {s.shape} and labels {y.shape} differ in shape")
        if y.dtype != np.bool_:
            if not np.issubdtype(y.dtype, np.integer) or ((y != 0) & (y != 1)).any():
                raise InvalidParameter("labels must be boolean or 0/1 integers")
            y = y.astype(np.bool_)
        keep: npt.NDArray[np.bool_] | None = None
        if ignore is not None:
            ign = np.asarray(ignore)
            if ign.shape != s.shape:
                raise InvalidParameter(f"ignore {ign.shape} and scores {s.shape} differ in shape")
            keep = ~ign.astype(np.bool_)
        if not np.issubdtype(s.dtype, np.floating):
            if not np.issubdtype(s.dtype, np.integer) and s.dtype != np.bool_:
                raise InvalidParameter(f"scores must be real numbers, got dtype {s.dtype}")
            s = s.astype(np.float64)
        elif s.dtype.itemsize < 4:  # float16 cannot tell the bin edges apart
            s = s.astype(np.float32)

        s_flat, y_flat = s.reshape(-1), y.reshape(-1)
        k_flat = None if keep is None else keep.reshape(-1)
        edges = self._edges_as(s.dtype)
        size = self.n_bins + 1
        counts = np.zeros(2 * size, dtype=np.int64)
        for start in range(0, s_flat.size, _CHUNK):
            part = slice(start, start + _CHUNK)
            s_part, y_part = s_flat[part], y_flat[part]
            if k_flat is not None:
                s_part, y_part = s_part[k_flat[part]], y_part[k_flat[part]]
            bins = self._bin(s_part, edges)
            counts += np.bincount(bins + size * y_part, minlength=2 * size)
        self.negative += counts[:size]
        self.positive += counts[size:]
        return self

    def _edges_as(self, dtype: np.dtype[np.floating]) -> npt.NDArray[np.floating]:
        """Lower bin edges rounded to the score dtype, closed by +inf above the top bin."""
        return np.append(self.lower_edges.astype(dtype), np.array(np.inf, dtype=dtype))

    def _bin(self, s: npt.NDArray[np.floating], edges: npt.NDArray[np.floating]) -> npt.NDArray[np.intp]:
        """Bin index of every score, ``edges[b] <= s < edges[b + 1]``, exact in the score dtype."""
        if s.size and not (s.min() >= 0 and s.max() <= 1):  # also catches NaN
            bad = s[~((s >= 0) & (s <= 1))]
            raise InvalidParameter(f"scores must lie in [0, 1], found {float(bad[0])}")
        bins = np.clip(np.floor(s * self.n_bins), 0, self.n_bins).astype(np.intp)
        # s * n_bins is rounded, so the floor can land one bin off next to an edge; move those back.
        bins -= s < edges[bins]
        bins += s >= edges[bins + 1]
        return bins

    def __add__(self, other: object) -> ScoreHistogram:
        if isinstance(other, int) and other == 0:  # so that sum(histograms) works
            return self.copy()
        if not isinstance(other, ScoreHistogram):
            return NotImplemented
        if other.n_bins != self.n_bins:
            raise InvalidParameter(f"cannot add histograms of {self.n_bins} and {other.n_bins} bins")
        out = ScoreHistogram(self.n_bins)
        out.positive[:] = self.positive + other.positive
        out.negative[:] = self.negative + other.negative
        return out

    __radd__ = __add__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ScoreHistogram):
            return NotImplemented
        return (
            self.n_bins == other.n_bins
            and np.array_equal(self.positive, other.positive)
            and np.array_equal(self.negative, other.negative)
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"ScoreHistogram(n_bins={self.n_bins}, positive={self.n_positive}, negative={self.n_negative})"

    def copy(self) -> ScoreHistogram:
        return ScoreHistogram.from_counts(self.positive.copy(), self.negative.copy())

    def roc_curve(self) -> RocCurve | None:
        """The ROC through every non-empty bin's lower edge; ``None`` when a class is absent (undefined)."""
        if not self.defined:
            return None
        occupied = np.flatnonzero((self.positive + self.negative)[::-1] > 0)
        tp = np.cumsum(self.positive[::-1])[occupied]
        fp = np.cumsum(self.negative[::-1])[occupied]
        lower_edges = self.lower_edges[::-1][occupied]
        return RocCurve(
            fpr=np.concatenate([[0.0], fp / self.n_negative]),
            tpr=np.concatenate([[0.0], tp / self.n_positive]),
            thresholds=np.concatenate([[np.inf], lower_edges]),
        )

    def auc(self) -> float | None:
        """Trapezoidal area under :meth:`roc_curve`; ``None`` when a class is absent (undefined)."""
        if not self.defined:
            return None
        return float(binned_auc(self.positive, self.negative))

    def auc_error_bound(self) -> float | None:
        """Upper bound on ``|auc() - exact AUC|``: ``sum_b pos_b * neg_b / (2 P N)`` (see the module doc)."""
        if not self.defined:
            return None
        pos = self.positive.astype(np.float64)
        neg = self.negative.astype(np.float64)
        return float((pos * neg).sum() / (2.0 * pos.sum() * neg.sum()))


def binned_auc(
    positive: npt.NDArray[np.integer] | npt.NDArray[np.floating],
    negative: npt.NDArray[np.integer] | npt.NDArray[np.floating],
) -> npt.NDArray[np.float64]:
    """Trapezoidal AUC of histograms along the last axis (NaN where a class is absent).

    Each negative pixel in bin ``b`` is outranked by the positives in higher bins (counted 1) and tied with
    those in its own bin (counted 1/2): ``AUC = sum_b neg_b (pos_above_b + pos_b / 2) / (P N)``. Works on
    stacks of histograms.
    """
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    above = np.cumsum(pos[..., ::-1], axis=-1)[..., ::-1] - pos
    total = pos.sum(axis=-1) * neg.sum(axis=-1)
    area = (neg * (above + 0.5 * pos)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, area / np.where(total > 0, total, 1.0), np.nan)


def targets_from_label_map(
    label_map: npt.ArrayLike,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """``(positive, ignore)`` masks of a label map: code 6 (aspecific) is positive, 1..5 (benign) negative,
    0 (unlabelled) ignored."""
    labels = np.asarray(label_map)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InvalidParameter(f"label map must hold integer codes, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() > max(LABEL_CODES)):
        raise InvalidParameter(
            f"label codes must be in 0..{max(LABEL_CODES)}, found {labels.min()}..{labels.max()}"
        )
    return labels == ASPECIFIC, labels == 0


def mosaic_histogram(
    heat: npt.ArrayLike, label_map: npt.ArrayLike, *, n_bins: int = DEFAULT_BINS
) -> ScoreHistogram:
    """The histogram of one mosaic's heat map (scores in [0, 1]) over its labelled pixels."""
    heat_arr = np.asarray(heat)
    labels = np.asarray(label_map)
    if heat_arr.shape != labels.shape:
        raise InvalidParameter(f"heat map {heat_arr.shape} and label map {labels.shape} differ in shape")
    positive, ignore = targets_from_label_map(labels)
    return ScoreHistogram(n_bins).add(heat_arr, positive, ignore=ignore)
