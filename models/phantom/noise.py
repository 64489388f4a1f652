"""Random building blocks of the phantom textures: smooth fields, point sets, cells, warps, Voronoi cells.

Every function works in pixels on in-memory float32 arrays; the callers convert micrometres to pixels.
OpenCV is used only for in-memory filtering and drawing (blur, resize, remap, distance transforms).
"""

from __future__ import annotations

import itertools

import cv2
import numpy as np

Shape = tuple[int, int]


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with reflected borders; sigma in pixels, a no-op below 0.3 px."""
    if sigma < 0.3:
        return img.astype(np.float32, copy=False)
    return cv2.GaussianBlur(img.astype(np.float32, copy=False), (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def smooth_field(rng: np.random.Generator, shape: Shape, scale: float) -> np.ndarray:
    """Zero-mean, unit-std random field whose features are about ``scale`` pixels across.

    Drawn on a coarse grid and resized, so a field of millimetre features costs the same as a fine one.
    """
    h, w = shape
    step = max(scale / 4.0, 1.0)
    ch, cw = int(np.ceil(h / step)) + 2, int(np.ceil(w / step)) + 2
    coarse = blur(rng.standard_normal((ch, cw)).astype(np.float32), 1.2)
    full = cv2.resize(coarse, (max(int(cw * step), w), max(int(ch * step), h)), interpolation=cv2.INTER_CUBIC)
    out = full[:h, :w]
    out = out - out.mean()
    return (out / (out.std() + 1e-6)).astype(np.float32)


def jittered_points(
    rng: np.random.Generator, shape: Shape, spacing: float, jitter: float = 0.45, margin: float = 0.0
) -> np.ndarray:
    """Roughly evenly spaced (y, x) points: a square grid with each point moved by ``jitter`` x spacing."""
    h, w = shape
    spacing = max(float(spacing), 1.0)
    ys = np.arange(-margin, h + margin, spacing)
    xs = np.arange(-margin, w + margin, spacing)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    pts = np.stack([gy.ravel(), gx.ravel()], axis=1).astype(np.float32)
    pts += rng.uniform(-jitter, jitter, pts.shape).astype(np.float32) * spacing
    # rows shifted by half a step on alternate lines make the lattice hexagonal rather than square
    pts[:, 1] += ((gy.ravel() / spacing).astype(int) % 2) * spacing * 0.5
    return pts


def random_points(rng: np.random.Generator, shape: Shape, density: float) -> np.ndarray:
    """Poisson points, ``density`` per pixel."""
    h, w = shape
    n = rng.poisson(max(density, 0.0) * h * w)
    return np.stack([rng.uniform(0, h, n), rng.uniform(0, w, n)], axis=1).astype(np.float32)


def splat(shape: Shape, points: np.ndarray, amplitude: np.ndarray | float = 1.0) -> np.ndarray:
    """Impulses at the points (bilinear split between the four nearest pixels)."""
    h, w = shape
    out = np.zeros((h + 1) * (w + 1), dtype=np.float32)
    if len(points) == 0:
        return out.reshape(h + 1, w + 1)[:h, :w]
    amp = np.broadcast_to(np.asarray(amplitude, dtype=np.float32), (len(points),))
    y, x = points[:, 0], points[:, 1]
    keep = (y >= 0) & (y < h - 1e-3) & (x >= 0) & (x < w - 1e-3)
    y, x, amp = y[keep], x[keep], amp[keep]
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = (y - y0).astype(np.float32), (x - x0).astype(np.float32)
    for dy, dx, wgt in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        np.add.at(out, (y0 + dy) * (w + 1) + (x0 + dx), amp * wgt)
    return out.reshape(h + 1, w + 1)[:h, :w]


def cells(
    rng: np.random.Generator,
    shape: Shape,
    points: np.ndarray,
    radius: float,
    *,
    radius_cv: float = 0.25,
    brightness_cv: float = 0.3,
) -> np.ndarray:
    """Bright round cells of about ``radius`` px at the points, peak near 1, sizes in three bins."""
    out = np.zeros(shape, dtype=np.float32)
    if len(points) == 0:
        return out
    radii = radius * np.exp(rng.normal(0.0, radius_cv, len(points)))
    amps = np.exp(rng.normal(0.0, brightness_cv, len(points))).astype(np.float32)
    edges = np.quantile(radii, [0.0, 1 / 3, 2 / 3, 1.0])
    for lo, hi in itertools.pairwise(edges):
        sel = (radii >= lo) & (radii <= hi)
        if not sel.any():
            continue
        r = max(float(np.median(radii[sel])), 0.4)
        sigma = max(r / 1.2, 0.35)
        # a blurred impulse of unit mass peaks at 1 / (2 pi sigma^2): rescale so a cell peaks near amp
        out += blur(splat(shape, points[sel], amps[sel]), sigma) * (2 * np.pi * sigma * sigma)
    return out


def warp(rng: np.random.Generator, img: np.ndarray, amount: float, scale: float) -> np.ndarray:
    """Displace ``img`` by a smooth random field (``amount`` px at features ``scale`` px across)."""
    if amount <= 0:
        return img
    h, w = img.shape
    dy = smooth_field(rng, (h, w), scale) * amount
    dx = smooth_field(rng, (h, w), scale) * amount
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(
        img.astype(np.float32, copy=False),
        gx + dx,
        gy + dy,
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT,
    )


def voronoi(shape: Shape, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-seed index per pixel and the distance (px) to the nearest cell border.

    The border distance is what cords, membranes and cell interiors are drawn from.
    """
    h, w = shape
    seeds = np.full((h, w), 255, dtype=np.uint8)
    yy = np.clip(np.rint(points[:, 0]).astype(int), 0, h - 1)
    xx = np.clip(np.rint(points[:, 1]).astype(int), 0, w - 1)
    seeds[yy, xx] = 0
    _, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    border = np.zeros((h, w), dtype=bool)
    border[:-1, :] |= labels[:-1, :] != labels[1:, :]
    border[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    dist = cv2.distanceTransform((~border).astype(np.uint8), cv2.DIST_L2, 5)
    return labels, dist.astype(np.float32)


def disk_mask(shape: Shape, centres: np.ndarray, radii: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Filled ellipses (random aspect up to 1.5 and orientation) as a uint8 mask of 0/1."""
    mask = np.zeros(shape, dtype=np.uint8)
    for (cy, cx), r in zip(centres, radii, strict=True):
        aspect = rng.uniform(1.0, 1.5)
        axes = (max(round(r * aspect), 1), max(round(r / aspect), 1))
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(mask, (round(cx), round(cy)), axes, angle, 0, 360, 1, -1)
    return mask


def normalise(img: np.ndarray, mean: float, std: float, mask: np.ndarray | None = None) -> np.ndarray:
    """Shift and scale to a given mean and standard deviation (over ``mask`` when given)."""
    vals = img[mask] if mask is not None and mask.any() else img
    m, s = float(vals.mean()), float(vals.std())
    return ((img - m) * (std / max(s, 1e-6)) + mean).astype(np.float32)


def fibres(
    rng: np.random.Generator, shape: Shape, length: float, width: float, angle: float | None = None
) -> np.ndarray:
    """Zero-mean, unit-std oriented wisps (collagen bundles): white noise smeared along one direction."""
    h, w = shape
    d = int(np.ceil(np.hypot(h, w))) + 4
    streak = cv2.GaussianBlur(
        rng.standard_normal((d, d)).astype(np.float32),
        (0, 0),
        sigmaX=max(length, 0.5),
        sigmaY=max(width, 0.3),
        borderType=cv2.BORDER_REFLECT,
    )
    theta = float(rng.uniform(0.0, 180.0)) if angle is None else angle
    rot = cv2.warpAffine(
        streak, cv2.getRotationMatrix2D((d / 2, d / 2), theta, 1.0), (d, d), borderMode=cv2.BORDER_REFLECT
    )
    y0, x0 = (d - h) // 2, (d - w) // 2
    out = rot[y0 : y0 + h, x0 : x0 + w]
    return ((out - out.mean()) / (out.std() + 1e-6)).astype(np.float32)
