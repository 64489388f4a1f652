"""Patch-level metrics against scikit-learn, and the per-mosaic pixel summary."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from models.errors import InvalidParameter
from models.metrics.pixel import (
    patch_auc,
    patch_metrics,
    patch_roc_curve,
    per_mosaic_metrics,
    pixel_metrics,
)
from models.metrics.roc import ScoreHistogram, mosaic_histogram


@pytest.mark.parametrize("seed", range(4))
def test_patch_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.random(2000) < 0.35
    probs = np.round(np.clip(rng.normal(0.4 + 0.2 * labels, 0.2), 0, 1), 2)  # many ties
    assert patch_auc(probs, labels) == pytest.approx(roc_auc_score(labels, probs), abs=1e-12)


def test_patch_roc_matches_sklearn() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 2, 500)
    probs = np.round(rng.random(500), 2)
    curve = patch_roc_curve(probs, labels)
    assert curve is not None
    fpr, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)
    np.testing.assert_allclose(curve.fpr, fpr)
    np.testing.assert_allclose(curve.tpr, tpr)
    np.testing.assert_array_equal(curve.thresholds[1:], thresholds[1:])


def test_patch_accuracy_calls_aspecific_above_the_threshold() -> None:
    probs = [0.9, 0.5, 0.51, 0.2, 0.7, 0.1]
    labels = [True, True, False, False, True, False]
    # Predicted: T F T F T F (0.5 is not greater than 0.5) -> 4 of 6 right.
    result = patch_metrics(probs, labels)
    assert result.accuracy == pytest.approx(4 / 6)
    assert result.n == 6 and result.n_positive == 3 and result.threshold == 0.5
    assert result.auc == pytest.approx(roc_auc_score(labels, probs))
    assert patch_metrics(probs, labels, threshold=0.45).accuracy == pytest.approx(5 / 6)


def test_patch_metrics_with_one_class() -> None:
    result = patch_metrics([0.2, 0.8], [0, 0])
    assert result.auc is None and result.accuracy == 0.5
    assert patch_roc_curve([0.2, 0.8], [1, 1]) is None


@pytest.mark.parametrize(
    ("probs", "labels"),
    [([0.1, 0.2], [1]), ([], []), ([0.1, np.nan], [0, 1]), ([0.1, 0.2], [0, 2])],
)
def test_patch_input_is_validated(probs: list[float], labels: list[int]) -> None:
    with pytest.raises(InvalidParameter):
        patch_metrics(probs, labels)


def test_per_mosaic_auc_undefined_for_one_class() -> None:
    rng = np.random.default_rng(0)
    heat = rng.random((40, 40))
    mixed = rng.integers(0, 7, size=(40, 40)).astype(np.uint8)
    all_benign = rng.integers(0, 6, size=(40, 40)).astype(np.uint8)
    all_aspecific = np.where(rng.random((40, 40)) < 0.5, 6, 0).astype(np.uint8)
    results = per_mosaic_metrics(
        {
            "mixed": mosaic_histogram(heat, mixed),
            "benign": mosaic_histogram(heat, all_benign),
            "aspecific": mosaic_histogram(heat, all_aspecific),
        }
    )
    assert results["mixed"].auc is not None and results["mixed"].auc_error_bound is not None
    for name in ("benign", "aspecific"):
        assert results[name].auc is None and results[name].auc_error_bound is None
    assert results["aspecific"].dice.best_dice == 1.0  # every labelled pixel is positive; t = 0 finds all
    assert results["benign"].n_positive == 0


def test_pixel_metrics_as_json() -> None:
    labels = np.array([[1, 2, 0, 0]], dtype=np.uint8)
    metrics = pixel_metrics(mosaic_histogram(np.array([[0.1, 0.3, 0.9, 0.9]]), labels))
    text = json.dumps(metrics.as_dict(), allow_nan=False)
    back = json.loads(text)
    assert back["auc"] is None and back["n_negative"] == 2
    assert back["dice"][0] == 0.0 and back["dice"][-1] is None
    assert len(back["dice_thresholds"]) == 51


def test_pooled_metrics_are_the_sum_of_mosaics() -> None:
    rng = np.random.default_rng(2)
    hists = [mosaic_histogram(rng.random((30, 30)), rng.integers(0, 7, size=(30, 30))) for _ in range(4)]
    pooled = pixel_metrics(sum(hists, ScoreHistogram()))
    assert pooled.n_positive == sum(h.n_positive for h in hists)
    assert pooled.auc is not None and 0.4 < pooled.auc < 0.6
