"""Weak-label sampling: the patient split, class balance, draws inside the mosaic, label downsampling."""

from __future__ import annotations

import numpy as np
import pytest

from models.errors import InvalidParameter
from models.labels import ASPECIFIC
from models.training.weak_labels import (
    PATCH,
    allocate,
    centre_counts,
    class_targets,
    downsample_labels,
    draw_centres,
    plan_draws,
    split_patients,
)


def test_mosaics_contribute_in_proportion_to_their_pixels() -> None:
    counts = np.zeros((3, 7), dtype=np.int64)
    counts[:, 3] = [100, 300, 0]
    counts[:, ASPECIFIC] = [50, 50, 100]
    plan = plan_draws(counts, per_class=8)
    assert plan[:, 3].tolist() == [2, 6, 0]
    assert plan[:, ASPECIFIC].tolist() == [10, 10, 20]
    assert allocate(5, np.array([1.0, 1.0, 1.0])).sum() == 5
    assert class_targets(3) == {1: 3, 2: 3, 3: 3, 4: 3, 5: 3, 6: 15}


def test_split_keeps_class_shares_close_to_70_10_20() -> None:
    rng = np.random.default_rng(1)
    counts = {f"p{i}": rng.integers(0, 1000, 7) for i in range(40)}
    split = split_patients(counts, seed=0)
    assert sorted(split.values()).count("train") == 28
    totals = np.sum(list(counts.values()), axis=0)
    for name, target in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        share = np.sum([counts[p] for p, s in split.items() if s == name], axis=0)[1:] / totals[1:]
        assert np.all(np.abs(share - target) < 0.08)
    with pytest.raises(InvalidParameter):
        split_patients({"a": np.ones(7), "b": np.ones(7)}, seed=0)


def test_draws_stay_inside_and_on_their_class() -> None:
    labels = np.zeros((700, 800), dtype=np.uint8)
    labels[:, :400] = 2
    labels[300:, 400:] = ASPECIFIC
    draw = draw_centres(labels, {2: 30, ASPECIFIC: 20}, np.random.default_rng(0))
    assert labels[draw.y, draw.x].tolist() == draw.code.tolist()
    assert draw.x.min() >= PATCH // 2 and draw.x.max() <= 800 - PATCH // 2
    assert draw.y.min() >= PATCH // 2 and draw.y.max() <= 700 - PATCH // 2
    assert centre_counts(labels)[2] > 0
    with pytest.raises(InvalidParameter):
        draw_centres(labels, {5: 1}, np.random.default_rng(0))


def test_labels_at_the_microscope_pixel_size_are_downsampled() -> None:
    labels = np.kron(np.array([[1, 6], [3, 0]], dtype=np.uint8), np.ones((4, 4), dtype=np.uint8))
    assert downsample_labels(labels, 4).tolist() == [[1, 6], [3, 0]]
