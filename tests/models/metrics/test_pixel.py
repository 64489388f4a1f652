"""Pixel metrics of a mosaic and of a pooled set, from score histograms."""

from __future__ import annotations

import json

import numpy as np

from models.metrics.pixel import per_mosaic_metrics, pixel_metrics
from models.metrics.roc import ScoreHistogram, mosaic_histogram


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
