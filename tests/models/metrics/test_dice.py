"""Dice sweep from histograms: hand-made masks with known answers and a brute-force check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.errors import InvalidParameter
from models.metrics.dice import DICE_THRESHOLDS, dice_sweep, threshold_bins
from models.metrics.roc import ScoreHistogram, mosaic_histogram

# Four aspecific pixels, six benign ones of different codes, and two unlabelled pixels that are hot.
LABELS = np.array(
    [
        [6, 6, 6, 6],
        [1, 2, 3, 4],
        [5, 1, 0, 0],
    ],
    dtype=np.uint8,
)
HEAT = np.array(
    [
        [0.9, 0.7, 0.5, 0.25],
        [0.6, 0.3, 0.2, 0.0],
        [0.04, 0.5, 1.0, 1.0],
    ],
    dtype=np.float32,
)


def brute_force_dice(heat: np.ndarray, labels: np.ndarray, t: float) -> float:
    labelled = labels > 0
    pred = heat[labelled] >= heat.dtype.type(t)
    truth = labels[labelled] == 6
    denom = pred.sum() + truth.sum()
    return math.nan if denom == 0 else 2 * (pred & truth).sum() / denom


def test_hand_made_mask() -> None:
    sweep = dice_sweep(mosaic_histogram(HEAT, LABELS))
    assert sweep.thresholds.shape == (51,) and sweep.dice.shape == (51,)
    dice = dict(zip(np.round(sweep.thresholds, 2), sweep.dice, strict=True))
    # t = 0: all 10 labelled pixels predicted; TP 4, FP 6 -> 8 / 14.
    assert dice[0.0] == pytest.approx(8 / 14)
    # t = 0.06: TP 4, FP 4 (0.6 0.3 0.2 0.5) -> 8 / 12.
    assert dice[0.06] == pytest.approx(8 / 12)
    # t = 0.22 and 0.24: TP 4, FP 3 (0.6 0.3 0.5) -> 8 / 11, the best.
    assert dice[0.22] == pytest.approx(8 / 11) and dice[0.24] == pytest.approx(8 / 11)
    # t = 0.26: TP 3, FP 3 -> 6 / 10.
    assert dice[0.26] == pytest.approx(6 / 10)
    # t = 0.5 (inclusive): predicted 0.9 0.7 0.5 | 0.6 0.5 -> TP 3, FP 2, FN 1 -> 6 / 9.
    assert dice[0.5] == pytest.approx(6 / 9)
    # t = 0.52: TP 2 (0.9, 0.7), FP 1 (0.6) -> 4 / 7.
    assert dice[0.52] == pytest.approx(4 / 7)
    # t = 0.62: TP 2, FP 0 -> 4 / 6.
    assert dice[0.62] == pytest.approx(4 / 6)
    # t = 0.92 and up: nothing predicted, four positives missed -> 0 (the hot unlabelled pixels never count).
    assert dice[0.92] == 0.0 and dice[1.0] == 0.0
    assert sweep.best_dice == pytest.approx(8 / 11)
    assert sweep.best_threshold == pytest.approx(0.22)  # 0.22 and 0.24 tie; the lowest wins
    for t, d in zip(sweep.thresholds, sweep.dice, strict=True):
        assert d == pytest.approx(brute_force_dice(HEAT, LABELS, t)), t


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("seed", range(3))
def test_sweep_matches_brute_force(dtype: type[np.floating], seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 7, size=(64, 48)).astype(np.uint8)
    # Quantised heat puts many pixels exactly on the thresholds.
    heat = (np.round(rng.random((64, 48)) * 100) / 100).astype(dtype)
    sweep = dice_sweep(mosaic_histogram(heat, labels))
    expected = [brute_force_dice(heat, labels, t) for t in DICE_THRESHOLDS]
    np.testing.assert_allclose(sweep.dice, expected, rtol=1e-12)


def test_no_positive_and_nothing_predicted_is_undefined() -> None:
    labels = np.array([[1, 2, 3, 0]], dtype=np.uint8)
    heat = np.array([[0.1, 0.3, 0.05, 0.99]])
    sweep = dice_sweep(mosaic_histogram(heat, labels))
    dice = dict(zip(np.round(sweep.thresholds, 2), sweep.dice, strict=True))
    assert dice[0.0] == 0.0 and dice[0.3] == 0.0  # false positives, no true positive
    assert math.isnan(dice[0.32]) and math.isnan(dice[1.0])
    assert sweep.best_dice == 0.0 and sweep.best_threshold == 0.0
    as_one = dice_sweep(mosaic_histogram(heat, labels), empty=1.0)
    assert as_one.best_dice == 1.0 and as_one.best_threshold == pytest.approx(0.32)


def test_nothing_labelled_has_no_best() -> None:
    sweep = dice_sweep(mosaic_histogram(np.array([[0.5, 0.7]]), np.zeros((1, 2), dtype=np.uint8)))
    assert np.isnan(sweep.dice).all()
    assert sweep.best_dice is None and sweep.best_threshold is None


def test_custom_thresholds_snap_to_edges() -> None:
    hist = mosaic_histogram(HEAT, LABELS)
    sweep = dice_sweep(hist, thresholds=np.linspace(0, 1, 11))
    np.testing.assert_array_equal(sweep.thresholds, np.arange(11) / 10)
    with pytest.raises(InvalidParameter, match="multiple"):
        dice_sweep(hist, thresholds=[0.123456])
    with pytest.raises(InvalidParameter, match=r"\[0, 1\]"):
        dice_sweep(hist, thresholds=[1.5])
    with pytest.raises(InvalidParameter):
        threshold_bins([], 100)


def test_paper_thresholds_need_a_bin_count_divisible_by_50() -> None:
    with pytest.raises(InvalidParameter, match="multiple"):
        dice_sweep(ScoreHistogram(2**16))
