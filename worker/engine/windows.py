"""The sliding-window grid: where windows start, ending flush with the image edge."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.errors import InvalidParameter


def window_starts(length: int, window: int, step: int) -> np.ndarray:
    """Starts 0, step, 2*step, ... <= length - window, plus length - window if not already flush.

    An axis shorter than the window has the single start 0 (the image is zero-padded to the window).
    """
    if window < 1:
        raise InvalidParameter(f"window must be >= 1, got {window}")
    if not step >= 1:
        raise InvalidParameter(f"step must be >= 1, got {step}")
    if length <= window:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, length - window + 1, step, dtype=np.int64)
    if starts[-1] != length - window:
        starts = np.append(starts, length - window)
    return starts


@dataclass(frozen=True)
class WindowGrid:
    """All window positions over an image of ``height`` x ``width`` (before padding)."""

    height: int
    width: int
    window: int
    step: int

    @property
    def padded_shape(self) -> tuple[int, int]:
        """The image shape after zero-padding short axes up to the window size."""
        return max(self.height, self.window), max(self.width, self.window)

    @property
    def ys(self) -> np.ndarray:
        return window_starts(self.height, self.window, self.step)

    @property
    def xs(self) -> np.ndarray:
        return window_starts(self.width, self.window, self.step)

    @property
    def count(self) -> int:
        return len(self.ys) * len(self.xs)


def estimate_windows(height: int, width: int, *, downsample: int, window: int, step: int) -> int:
    """How many windows a mosaic of this size needs, before reading it."""
    grid = WindowGrid(
        height=max(1, height // downsample), width=max(1, width // downsample), window=window, step=step
    )
    return grid.count
