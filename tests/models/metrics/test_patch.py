"""Patch-level metrics against scikit-learn, and the names training records them under."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from models.errors import InvalidParameter
from models.metrics.patch import patch_auc, patch_metrics, patch_roc_curve


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


def test_patch_metrics_as_training_records_them() -> None:
    m = patch_metrics(np.array([0.1, 0.6, 0.7, 0.9]), np.array([0, 0, 1, 1])).as_dict()
    assert m["auc"] == 1.0 and m["accuracy"] == 0.75
    assert m["sensitivity"] == 1.0 and m["specificity"] == 0.5 and m["n_aspecific"] == 2
    assert patch_metrics(np.array([0.2, 0.9]), np.array([1, 1])).as_dict()["auc"] is None
