"""Histogram ROC/AUC against scikit-learn, exact binning, and the label-map helper."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

import models.metrics.roc
from models.errors import InvalidParameter
from models.metrics.roc import DEFAULT_BINS, ScoreHistogram, mosaic_histogram, targets_from_label_map


def random_scores(seed: int, n: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.3
    scores = np.clip(rng.normal(0.4 + 0.25 * labels, 0.2), 0.0, 1.0)
    return scores, labels


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n_bins", [DEFAULT_BINS, 50, 7])
def test_auc_within_stated_bound_of_sklearn(seed: int, n_bins: int) -> None:
    scores, labels = random_scores(seed)
    hist = ScoreHistogram(n_bins).add(scores, labels)
    auc, bound = hist.auc(), hist.auc_error_bound()
    assert auc is not None and bound is not None
    exact = roc_auc_score(labels, scores)
    assert abs(auc - exact) <= bound + 1e-12
    if n_bins == DEFAULT_BINS:
        assert bound < 1e-3


def test_bound_is_tight_when_bins_hold_one_value() -> None:
    """Scores on the bin edges: within-bin pairs are true ties and the binned AUC is exact."""
    rng = np.random.default_rng(3)
    labels = rng.random(4000) < 0.4
    scores = np.round(np.clip(rng.normal(0.5 + 0.1 * labels, 0.2), 0, 1) * 50) / 50
    hist = ScoreHistogram(50).add(scores, labels)
    assert hist.auc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    bound = hist.auc_error_bound()
    assert bound is not None and bound > 0.01  # the bound is loose here; the AUC is still exact


def test_roc_curve_matches_sklearn_on_bin_edges() -> None:
    rng = np.random.default_rng(4)
    labels = rng.random(3000) < 0.5
    scores = rng.integers(0, 101, size=3000) / 100
    hist = ScoreHistogram(100).add(scores, labels)
    curve = hist.roc_curve()
    assert curve is not None
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(curve.fpr, fpr, atol=1e-15)
    np.testing.assert_allclose(curve.tpr, tpr, atol=1e-15)
    np.testing.assert_array_equal(curve.thresholds[1:], thresholds[1:])
    assert curve.thresholds[0] == np.inf


def test_auc_is_the_trapezoid_under_the_curve() -> None:
    scores, labels = random_scores(5)
    hist = ScoreHistogram(20).add(scores, labels)
    curve = hist.roc_curve()
    assert curve is not None
    assert hist.auc() == pytest.approx(np.trapezoid(curve.tpr, curve.fpr), abs=1e-12)
    assert curve.fpr[-1] == 1.0 and curve.tpr[-1] == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bins_split_exactly_at_every_edge(dtype: type[np.floating]) -> None:
    """``heat >= k / n`` counted from the bins equals the count on the heat map, even next to an edge."""
    n_bins = 50
    edges = (np.arange(n_bins + 1) / n_bins).astype(dtype)
    near = np.concatenate([edges, np.nextafter(edges, dtype(0)), np.nextafter(edges, dtype(1))])
    rng = np.random.default_rng(6)
    scores = np.clip(np.concatenate([near, rng.random(1000).astype(dtype)]), 0, 1).astype(dtype)
    hist = ScoreHistogram(n_bins).add(scores, np.ones(scores.shape, dtype=bool))
    above = np.cumsum(hist.positive[::-1])[::-1]
    for k in range(n_bins + 1):
        assert above[k] == int((scores >= dtype(k / n_bins)).sum()), k
    assert hist.positive[n_bins] == int((scores == 1).sum())


def test_label_map_targets() -> None:
    labels = np.array([[0, 1, 2], [3, 4, 5], [6, 6, 0]], dtype=np.uint8)
    positive, ignore = targets_from_label_map(labels)
    np.testing.assert_array_equal(positive, labels == 6)
    np.testing.assert_array_equal(ignore, labels == 0)


@pytest.mark.parametrize("bad", [np.array([[7]]), np.array([[-1]]), np.array([[0.5]])])
def test_label_map_rejects_unknown_codes(bad: np.ndarray) -> None:
    with pytest.raises(InvalidParameter):
        targets_from_label_map(bad)


def test_mosaic_histogram_ignores_unlabelled_pixels() -> None:
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 7, size=(120, 90)).astype(np.uint8)
    heat = rng.random((120, 90)).astype(np.float32)
    heat[labels == 0] = 1.0  # would ruin the AUC if counted
    hist = mosaic_histogram(heat, labels)
    labelled = labels > 0
    assert hist.n_positive == int((labels == 6).sum())
    assert hist.n_negative == int(((labels >= 1) & (labels <= 5)).sum())
    expected = roc_auc_score(labels[labelled] == 6, heat[labelled])
    auc, bound = hist.auc(), hist.auc_error_bound()
    assert auc is not None and bound is not None
    assert abs(auc - expected) <= bound + 1e-12


def test_mosaic_histogram_shape_mismatch() -> None:
    with pytest.raises(InvalidParameter, match="differ in shape"):
        mosaic_histogram(np.zeros((4, 4)), np.zeros((4, 5), dtype=np.uint8))


def test_add_in_chunks_with_ignore(monkeypatch: pytest.MonkeyPatch) -> None:
    scores, labels = random_scores(8, n=1001)
    ignore = np.random.default_rng(8).random(1001) < 0.2
    whole = ScoreHistogram(100).add(scores, labels, ignore=ignore)
    monkeypatch.setattr(models.metrics.roc, "_CHUNK", 7)
    chunked = ScoreHistogram(100).add(
        scores.reshape(7, 143), labels.reshape(7, 143), ignore=ignore.reshape(7, 143)
    )
    assert chunked == whole
    assert whole.n_positive + whole.n_negative == int((~ignore).sum())


def test_histograms_merge_and_pickle() -> None:
    parts = [ScoreHistogram(100).add(*random_scores(seed, n=300)) for seed in range(3)]
    merged = parts[0] + parts[1] + parts[2]
    assert sum(parts) == merged
    scores = np.concatenate([random_scores(seed, n=300)[0] for seed in range(3)])
    labels = np.concatenate([random_scores(seed, n=300)[1] for seed in range(3)])
    assert merged == ScoreHistogram(100).add(scores, labels)
    assert parts[0].n_positive == random_scores(0, n=300)[1].sum()  # operands untouched
    restored = pickle.loads(pickle.dumps(merged))
    assert restored == merged and restored.auc() == merged.auc()
    with pytest.raises(InvalidParameter, match="bins"):
        _ = parts[0] + ScoreHistogram(50)


def test_from_counts_round_trip() -> None:
    hist = ScoreHistogram(10).add(*random_scores(9, n=200))
    assert ScoreHistogram.from_counts(hist.positive, hist.negative) == hist
    with pytest.raises(InvalidParameter):
        ScoreHistogram.from_counts([1, 2], [1])
    with pytest.raises(InvalidParameter):
        ScoreHistogram.from_counts([1, -2], [1, 0])
    with pytest.raises(InvalidParameter):
        ScoreHistogram.from_counts([1.5, 2], [1, 0])


def test_one_class_is_undefined() -> None:
    hist = ScoreHistogram(10).add(np.array([0.1, 0.5, 0.9]), np.zeros(3, dtype=bool))
    assert not hist.defined
    assert hist.auc() is None and hist.roc_curve() is None and hist.auc_error_bound() is None


@pytest.mark.parametrize("scores", [[0.5, 1.0001], [-0.01, 0.5], [np.nan, 0.5]])
def test_scores_outside_unit_interval_are_rejected(scores: list[float]) -> None:
    with pytest.raises(InvalidParameter, match=r"\[0, 1\]"):
        ScoreHistogram(10).add(np.array(scores), np.array([True, False]))


def test_labels_must_be_binary() -> None:
    with pytest.raises(InvalidParameter, match="labels"):
        ScoreHistogram(10).add(np.array([0.1, 0.2]), np.array([0, 2]))
    with pytest.raises(InvalidParameter, match="shape"):
        ScoreHistogram(10).add(np.array([0.1, 0.2]), np.array([True]))


@pytest.mark.parametrize("n_bins", [0, -3, 2.5, True])
def test_bin_count_is_validated(n_bins: object) -> None:
    with pytest.raises(InvalidParameter):
        ScoreHistogram(n_bins)  # type: ignore[arg-type]
