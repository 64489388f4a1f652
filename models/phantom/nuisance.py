"""Acquisition nuisances shared by every pattern: fields, furrows, illumination, speckle, black margins.

None of them depends on the class under it, so no class can be told apart by brightness or noise alone.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.phantom.noise import Shape, blur, smooth_field


def field_gain(rng: np.random.Generator, shape: Shape, field_px: float) -> np.ndarray:
    """Per-field vignetting and gain on the 0.5 mm acquisition grid, which leaves visible seams."""
    h, w = shape
    n = int(np.ceil(field_px))
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    r2 = ((yy - (n - 1) / 2) ** 2 + (xx - (n - 1) / 2) ** 2) / (n / 2) ** 2
    strength = rng.uniform(0.15, 0.4)
    vignette = 1.0 - strength * r2 / 2.0
    rows, cols = int(np.ceil(h / n)), int(np.ceil(w / n))
    gains = np.exp(rng.normal(0.0, rng.uniform(0.04, 0.12), (rows, cols))).astype(np.float32)
    tiles = np.kron(gains, np.ones((n, n), dtype=np.float32)) * np.tile(vignette, (rows, cols))
    return tiles[:h, :w]


def furrows(rng: np.random.Generator, shape: Shape, px: float) -> tuple[np.ndarray, np.ndarray]:
    """Skin furrows crossing the mosaic: dark curving valleys with bright keratin walls.

    Returns a multiplicative and an additive map.
    """
    h, w = shape
    mask = np.zeros(shape, dtype=np.uint8)
    area_mm2 = h * w / (px * 1000.0) ** 2
    for _ in range(int(rng.poisson(0.08 * area_mm2))):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        angle = rng.uniform(0, np.pi)
        step = 60.0 * px
        pts: list[tuple[float, float]] = [(x, y)]
        for sign in (-1.0, 1.0):
            yy, xx, a = y, x, angle
            side = []
            for _ in range(int(2 * max(h, w) / step) + 2):
                a += rng.normal(0.0, 0.08)
                yy, xx = yy + sign * np.sin(a) * step, xx + sign * np.cos(a) * step
                side.append((xx, yy))
            pts = side[::-1] + pts if sign < 0 else pts + side
        width = max(int(rng.uniform(25.0, 90.0) * px), 2)
        cv2.polylines(mask, [np.array(pts, dtype=np.int32)], False, 1, width)
    soft = blur(mask.astype(np.float32), 10.0 * px)
    walls = np.clip(4.0 * soft * (1.0 - soft), 0.0, 1.0)
    return 1.0 - 0.75 * soft, 0.12 * walls


def speckle(rng: np.random.Generator, shape: Shape, looks: float) -> np.ndarray:
    """Multiplicative coherent speckle: unit-mean gamma noise of ``looks`` looks."""
    return rng.gamma(looks, 1.0 / looks, shape).astype(np.float32)


def illumination(rng: np.random.Generator, shape: Shape, px: float) -> np.ndarray:
    """Slow gain drift over millimetres (pressure, depth and focus changes across the mosaic)."""
    return np.exp(0.12 * smooth_field(rng, shape, rng.uniform(800.0, 2000.0) * px)).astype(np.float32)
