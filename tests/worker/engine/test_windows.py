from __future__ import annotations

import numpy as np
import pytest

from models.errors import InvalidParameter
from worker.engine.windows import WindowGrid, window_starts


def test_starts_end_flush_with_the_edge_when_step_does_not_divide() -> None:
    assert window_starts(300, 256, 25).tolist() == [0, 25, 44]


def test_starts_exactly_flush_are_not_repeated() -> None:
    assert window_starts(306, 256, 25).tolist() == [0, 25, 50]


def test_axis_equal_to_window_has_one_start() -> None:
    assert window_starts(256, 256, 25).tolist() == [0]


def test_axis_shorter_than_window_is_padded_to_one_window() -> None:
    grid = WindowGrid(height=100, width=300, window=256, step=50)
    assert grid.ys.tolist() == [0]
    assert grid.xs.tolist() == [0, 44]
    assert grid.padded_shape == (256, 300)
    assert grid.count == 2


def test_every_pixel_is_covered() -> None:
    starts = window_starts(1000, 256, 97)
    covered = np.zeros(1000, dtype=bool)
    for s in starts:
        covered[s : s + 256] = True
    assert covered.all()
    assert starts[-1] == 1000 - 256


def test_bad_step_is_a_clear_error() -> None:
    with pytest.raises(InvalidParameter, match="step"):
        window_starts(300, 256, 0)
