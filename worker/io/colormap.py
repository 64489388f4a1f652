"""The heatmap's display colours: a perceptual colormap with transparency where heat is near zero."""

from __future__ import annotations

import functools

import numpy as np

HEATMAP_COLORMAP = "inferno"
TRANSPARENT_BELOW = 0.15
"""Heat under this value fades to fully transparent, so benign areas show the mosaic unobstructed."""


@functools.lru_cache(maxsize=4)
def rgba_lut(name: str = HEATMAP_COLORMAP, transparent_below: float = TRANSPARENT_BELOW) -> np.ndarray:
    """A (256, 4) uint8 lookup table: index = round(255 * heat)."""
    from matplotlib import colormaps

    values = np.linspace(0.0, 1.0, 256)
    rgba = colormaps[name](values)
    rgba[:, 3] = np.clip(values / transparent_below, 0.0, 1.0)
    return np.rint(rgba * 255).astype(np.uint8)
