"""Bootstrap over mosaic histograms: reproducible, consistent with the single-histogram metrics, fast."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from models.errors import InvalidParameter
from models.metrics.bootstrap import (
    BootstrapParams,
    bootstrap,
    paired_difference,
    resample_multiplicity,
    roc_on_grid,
)
from models.metrics.dice import dice_sweep
from models.metrics.roc import ScoreHistogram


def mosaics(n: int, *, n_bins: int = 1000, pixels: int = 3000, seed: int = 0) -> list[ScoreHistogram]:
    rng = np.random.default_rng(seed)
    out = []
    for m in range(n):
        labels = rng.random(pixels) < rng.uniform(0.1, 0.6)
        scores = np.clip(rng.normal(0.35 + (0.1 + 0.02 * m) * labels, 0.2), 0, 1)
        out.append(ScoreHistogram(n_bins).add(scores, labels))
    return out


def resampled(hists: list[ScoreHistogram], weights: np.ndarray) -> ScoreHistogram:
    return ScoreHistogram.from_counts(
        weights @ np.stack([h.positive for h in hists]), weights @ np.stack([h.negative for h in hists])
    )


def read_roc(fpr: np.ndarray, tpr: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The piecewise-linear curve at each grid FPR, the top of a vertical rise where the grid meets one."""
    out = []
    for f in grid:
        values = []
        for x0, x1, y0, y1 in zip(fpr[:-1], fpr[1:], tpr[:-1], tpr[1:], strict=True):
            if x0 <= f <= x1:
                values.append(max(y0, y1) if x1 == x0 else y0 + (f - x0) / (x1 - x0) * (y1 - y0))
        out.append(max(values))
    return np.array(out)


def test_roc_on_grid_reads_the_top_of_a_rise_and_the_foot_of_the_next() -> None:
    grid = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    # Top-down bins (pos, neg): (1, 0) (0, 1) (1, 0) (0, 1): rises at FPR 0 and 0.5.
    tp = np.cumsum([[1.0, 0, 1, 0]], axis=1)
    fp = np.cumsum([[0.0, 1, 0, 1]], axis=1)
    np.testing.assert_allclose(roc_on_grid(tp, fp, grid)[0], [0.5, 0.5, 1.0, 1.0, 1.0])
    # (1, 1) (1, 0) (0, 1): a diagonal to (0.5, 0.5), then a rise to 1 at FPR 0.5.
    tp = np.cumsum([[1.0, 1, 0]], axis=1)
    fp = np.cumsum([[1.0, 0, 1]], axis=1)
    np.testing.assert_allclose(roc_on_grid(tp, fp, grid)[0], [0.0, 0.25, 1.0, 1.0, 1.0])
    assert np.isnan(roc_on_grid(tp, np.zeros_like(fp), grid)).all()


def test_reproducible_for_a_seed() -> None:
    hists = mosaics(6)
    params = BootstrapParams(n_resamples=50, seed=11)
    a, b = bootstrap(hists, params=params), bootstrap(hists, params=params)
    np.testing.assert_array_equal(a.multiplicity, b.multiplicity)
    np.testing.assert_array_equal(a.auc, b.auc)
    np.testing.assert_array_equal(a.tpr, b.tpr)
    assert a.auc_ci == b.auc_ci and a.best_dice_ci == b.best_dice_ci
    other = bootstrap(hists, params=BootstrapParams(n_resamples=50, seed=12))
    assert not np.array_equal(a.multiplicity, other.multiplicity)


def test_block_size_does_not_change_the_result() -> None:
    hists = mosaics(5)
    a = bootstrap(hists, params=BootstrapParams(n_resamples=37, block=100))
    b = bootstrap(hists, params=BootstrapParams(n_resamples=37, block=5))
    np.testing.assert_allclose(a.auc, b.auc, rtol=1e-14)
    np.testing.assert_array_equal(a.best_dice, b.best_dice)


def test_multiplicity_draws_as_many_mosaics_as_there_are() -> None:
    counts = resample_multiplicity(31, 1000, seed=0)
    assert counts.shape == (1000, 31)
    assert (counts.sum(axis=1) == 31).all()
    # About 1 - 1/e of the mosaics appear in a resample.
    assert (counts > 0).mean() == pytest.approx(1 - np.exp(-1), abs=0.02)


def test_each_resample_is_its_pooled_histogram() -> None:
    hists = mosaics(5)
    result = bootstrap(hists, params=BootstrapParams(n_resamples=20, seed=3, n_fpr=11))
    for r in range(0, 20, 4):
        pooled = resampled(hists, result.multiplicity[r])
        assert result.auc[r] == pytest.approx(pooled.auc(), abs=1e-12)
        sweep = dice_sweep(pooled)
        assert result.best_dice[r] == pytest.approx(sweep.best_dice, abs=1e-12)
        assert result.best_threshold[r] == sweep.best_threshold
        curve = pooled.roc_curve()
        assert curve is not None
        np.testing.assert_allclose(result.tpr[r], read_roc(curve.fpr, curve.tpr, result.fpr_grid), atol=1e-12)


def test_bands_bracket_the_mean_and_the_pooled_auc() -> None:
    hists = mosaics(10)
    result = bootstrap(hists, params=BootstrapParams(n_resamples=300))
    assert result.fpr_grid[0] == 0 and result.fpr_grid[-1] == 1
    assert (result.tpr_low <= result.tpr_mean + 1e-12).all()
    assert (result.tpr_mean <= result.tpr_high + 1e-12).all()
    assert result.tpr_mean[-1] == 1.0
    assert (np.diff(result.tpr_mean) >= -1e-12).all()
    pooled = sum(hists, ScoreHistogram(1000)).auc()
    assert pooled is not None
    assert result.auc_ci is not None and result.auc_ci[0] < pooled < result.auc_ci[1]
    assert result.best_dice_ci is not None and result.best_dice_ci[0] <= result.best_dice_ci[1]
    assert result.n_undefined == 0
    assert result.pooled_auc == pytest.approx(pooled)
    summary = json.loads(json.dumps(result.as_dict(), allow_nan=False))
    assert summary["n_resamples"] == 300 and summary["n_mosaics"] == 10
    assert summary["auc_ci"] == list(result.auc_ci) and len(summary["roc"]["tpr_mean"]) == 201


def test_resamples_of_one_class_are_undefined() -> None:
    rng = np.random.default_rng(1)
    benign = [ScoreHistogram(100).add(rng.random(50), np.zeros(50, dtype=bool)) for _ in range(3)]
    hists = [*mosaics(1, n_bins=100), *benign]
    result = bootstrap(hists, params=BootstrapParams(n_resamples=200, seed=2))
    only_benign = result.multiplicity[:, 0] == 0
    assert only_benign.any() and not only_benign.all()
    assert np.isnan(result.auc[only_benign]).all() and not np.isnan(result.auc[~only_benign]).any()
    assert np.isnan(result.tpr[only_benign]).all()
    assert result.n_undefined == int(only_benign.sum())
    # Benign-only pools still have a Dice (0: false positives and no true positive).
    assert (result.best_dice[only_benign] == 0).all()
    assert result.auc_ci is not None and not np.isnan(result.tpr_mean).any()


def test_no_resample_defined() -> None:
    rng = np.random.default_rng(1)
    benign = [ScoreHistogram(100).add(rng.random(50), np.zeros(50, dtype=bool)) for _ in range(3)]
    result = bootstrap(benign, params=BootstrapParams(n_resamples=10))
    assert result.auc_ci is None and np.isnan(result.tpr_mean).all()


def test_rejects_bad_input() -> None:
    with pytest.raises(InvalidParameter, match="at least one"):
        bootstrap([])
    with pytest.raises(InvalidParameter, match="bin counts"):
        bootstrap([ScoreHistogram(100), ScoreHistogram(50)])


@pytest.mark.parametrize(
    "kwargs",
    [{"n_resamples": 0}, {"confidence": 1.0}, {"n_fpr": 1}, {"block": 0}, {"thresholds": ()}],
)
def test_params_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidParameter):
        BootstrapParams(**kwargs)  # type: ignore[arg-type]


def test_a_thousand_resamples_of_twenty_mosaics_is_fast() -> None:
    hists = mosaics(20, n_bins=10_000, pixels=20_000)
    start = time.process_time()  # CPU time of this process: the load of other processes does not count
    result = bootstrap(hists, params=BootstrapParams(n_resamples=1000))
    elapsed = time.process_time() - start
    assert result.auc.shape == (1000,)
    assert elapsed < 10.0, f"bootstrap took {elapsed:.1f} s of CPU"


def test_a_paired_difference_resamples_the_same_mosaics_for_both_runs() -> None:
    a = mosaics(8, seed=1)
    rng = np.random.default_rng(2)
    # run B: the same pixels with noisier scores, so it is worse on every mosaic
    b = []
    for h in mosaics(8, seed=1, n_bins=1000):
        pos = np.repeat(np.arange(h.positive.size), h.positive) / 1000
        neg = np.repeat(np.arange(h.negative.size), h.negative) / 1000
        scores = np.clip(np.concatenate([pos, neg]) + rng.normal(0, 0.3, pos.size + neg.size), 0, 1)
        labels = np.concatenate([np.ones(pos.size, bool), np.zeros(neg.size, bool)])
        b.append(ScoreHistogram(1000).add(scores, labels))
    params = BootstrapParams(n_resamples=50, seed=3)
    same = paired_difference(a, a, params=params)
    assert same.auc == 0 and same.auc_ci == (0.0, 0.0) and same.best_dice_ci == (0.0, 0.0)
    diff = paired_difference(a, b, params=params)
    pooled = sum(a[1:], a[0].copy()), sum(b[1:], b[0].copy())
    assert diff.auc == pytest.approx(pooled[0].auc() - pooled[1].auc())
    assert diff.auc_ci is not None and 0 < diff.auc_ci[0] <= diff.auc <= diff.auc_ci[1]
    # each resample's difference is of the same draw of mosaics in both runs
    weights = resample_multiplicity(8, 50, 3)
    by_hand = [resampled(a, w).auc() - resampled(b, w).auc() for w in weights]
    assert diff.auc_ci == pytest.approx(tuple(np.percentile(by_hand, [2.5, 97.5])))
    with pytest.raises(InvalidParameter, match="same mosaics"):
        paired_difference(a, b[:7], params=params)
