"""The heatmap's display colours: perceptual colormaps with transparency where heat is near zero.

The colours are matplotlib's, sampled at 256 points and stored in ``colormaps.json`` (hex RGB triplets), so
the API colours tiles without matplotlib; ``tests/worker/io/test_colormap.py`` checks them against it.
Index ``i`` of every table is heat ``i / 255`` (the grey value of the heat pyramid).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

HEATMAP_COLORMAP = "inferno"
TRANSPARENT_BELOW = 0.15
"""Heat under this value fades to fully transparent, so benign areas show the mosaic unobstructed."""

TABLES = Path(__file__).with_name("colormaps.json")


@functools.cache
def _tables() -> dict[str, str]:
    data = json.loads(TABLES.read_text(encoding="utf-8"))
    return {str(k): str(v) for k, v in data.items()}


def colormap_names() -> tuple[str, ...]:
    """The colormaps a heatmap can be drawn with."""
    return tuple(_tables())


@functools.lru_cache(maxsize=16)
def rgb_lut(name: str = HEATMAP_COLORMAP) -> np.ndarray:
    """A (256, 3) uint8 table of the colormap ``name``."""
    tables = _tables()
    if name not in tables:
        raise ValueError(f"colormap must be one of {', '.join(tables)}, got {name!r}")
    return np.frombuffer(bytes.fromhex(tables[name]), dtype=np.uint8).reshape(256, 3)


def alpha_ramp(transparent_below: float = TRANSPARENT_BELOW) -> np.ndarray:
    """(256,) uint8 opacity: 0 at heat 0, rising linearly to opaque at ``transparent_below`` (0: opaque)."""
    if not 0.0 <= transparent_below <= 1.0:
        raise ValueError(f"transparent_below must be in 0..1, got {transparent_below}")
    values = np.linspace(0.0, 1.0, 256)
    if transparent_below == 0.0:
        return np.full(256, 255, dtype=np.uint8)
    return np.rint(np.clip(values / transparent_below, 0.0, 1.0) * 255).astype(np.uint8)


@functools.lru_cache(maxsize=64)
def rgba_lut(name: str = HEATMAP_COLORMAP, transparent_below: float = TRANSPARENT_BELOW) -> np.ndarray:
    """A (256, 4) uint8 lookup table: index = round(255 * heat)."""
    return np.concatenate([rgb_lut(name), alpha_ramp(transparent_below)[:, None]], axis=1)
