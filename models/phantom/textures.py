"""The six dermal-epidermal junction patterns (and the unlabelled "mild atypia" blend) as reflectance maps.

Each renderer draws one pattern over a whole rectangle at true scale (``px`` pixels per micrometre) and
returns float32 reflectance, roughly 0 (dark dermis) to 1 (bright melanin-laden cells). Sizes follow the
RCM literature the paper builds on (Pellacani/Scope pattern definitions): keratinocytes 10-15 um, basal
cells 8-10 um, dermal papillae 50-150 um, nests 30-100 um, dendritic processes 15-60 um.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from models.phantom.noise import (
    Shape,
    blur,
    cells,
    disk_mask,
    fibres,
    jittered_points,
    random_points,
    smooth_field,
    voronoi,
    warp,
)

Renderer = Callable[[np.random.Generator, Shape, float], np.ndarray]


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def epidermis(rng: np.random.Generator, shape: Shape, px: float, *, regularity: float = 1.0) -> np.ndarray:
    """Honeycomb: faint bright keratinocyte borders around darker cytoplasm, barely resolved at 2 um/px."""
    spacing = _u(rng, 11.0, 16.0) * px
    pts = jittered_points(rng, shape, spacing, jitter=0.22 + 0.3 * (1.0 - regularity))
    _, dist = voronoi(shape, pts)
    membrane = np.exp(-((dist / max(1.2 * px, 0.5)) ** 2))
    nuclei = cells(rng, shape, pts, 2.6 * px, radius_cv=0.15, brightness_cv=0.2)
    tex = 0.26 + 0.11 * membrane - 0.05 * np.clip(nuclei, 0, 1.2)
    tex += 0.05 * smooth_field(rng, shape, _u(rng, 30.0, 70.0) * px)
    tex += 0.03 * smooth_field(rng, shape, _u(rng, 150.0, 300.0) * px)
    return blur(tex, 1.0 * px)


def non_lesion(rng: np.random.Generator, shape: Shape, px: float) -> np.ndarray:
    """Non-lesional epidermis: a regular honeycomb with gentle large-scale undulation."""
    tex = epidermis(rng, shape, px, regularity=_u(rng, 0.75, 1.0))
    return tex * (1.0 + 0.1 * smooth_field(rng, shape, _u(rng, 150.0, 300.0) * px))


def _papillae(
    rng: np.random.Generator, shape: Shape, px: float, diameter_um: float, gap_um: float
) -> np.ndarray:
    spacing = (diameter_um + gap_um) * px
    centres = jittered_points(rng, shape, spacing, jitter=0.2, margin=spacing)
    radii = np.clip(diameter_um / 2 * np.exp(rng.normal(0, 0.22, len(centres))), 25.0, 75.0) * px
    mask = disk_mask(shape, centres, radii, rng).astype(np.float32)
    return warp(rng, mask, 5.0 * px, 40.0 * px)


def _dermis(rng: np.random.Generator, shape: Shape, px: float, level: float) -> np.ndarray:
    """Papillary dermis: dark grey with faint collagen wisps."""
    wisps = warp(rng, fibres(rng, shape, _u(rng, 15.0, 40.0) * px, 2.0 * px), 6.0 * px, 30.0 * px)
    return level + 0.025 * wisps + 0.03 * smooth_field(rng, shape, 15.0 * px)


def ring(rng: np.random.Generator, shape: Shape, px: float) -> np.ndarray:
    """Ring pattern: dark round dermal papillae, each rimmed by a cord of bright basal cells."""
    mask = _papillae(rng, shape, px, _u(rng, 70.0, 140.0), _u(rng, 35.0, 90.0))
    inside = mask > 0.5
    d_out = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, 5)
    d_in = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5)
    rim_w = _u(rng, 9.0, 18.0) * px
    rim = np.exp(-(((d_out - d_in - 0.3 * rim_w) / rim_w) ** 2))
    basal = cells(rng, shape, jittered_points(rng, shape, 9.0 * px, jitter=0.3), 4.0 * px, brightness_cv=0.35)
    soft = blur(mask, 3.0 * px)
    tex = (1 - soft) * epidermis(rng, shape, px) + soft * _dermis(rng, shape, px, _u(rng, 0.09, 0.14))
    tex += _u(rng, 0.16, 0.3) * rim * (0.55 + 0.45 * np.clip(basal, 0, 1.5))
    return blur(tex, 0.8 * px)


def meshwork(rng: np.random.Generator, shape: Shape, px: float) -> np.ndarray:
    """Meshwork: a bright reticulated network of thickened junctional cords around dark polygonal holes."""
    spacing = _u(rng, 60.0, 120.0) * px
    pts = jittered_points(rng, shape, spacing, jitter=0.42)
    _, dist = voronoi(shape, pts)
    width = _u(rng, 9.0, 18.0) * px * np.exp(0.35 * smooth_field(rng, shape, 50.0 * px))
    cords = warp(rng, np.exp(-((dist / width) ** 2)), 6.0 * px, 40.0 * px)
    dense = cells(rng, shape, jittered_points(rng, shape, 8.0 * px, jitter=0.35), 3.5 * px, brightness_cv=0.4)
    holes = _dermis(rng, shape, px, _u(rng, 0.1, 0.15))
    tex = holes * (1 - cords) + cords * _u(rng, 0.34, 0.48) * (0.6 + 0.45 * np.clip(dense, 0, 1.5))
    return blur(tex, 1.0 * px)


def nested(rng: np.random.Generator, shape: Shape, px: float) -> np.ndarray:
    """Nested (clod) pattern: compact round/oval aggregates of bright cells within darker papillary dermis."""
    spacing = _u(rng, 90.0, 160.0) * px
    centres = jittered_points(rng, shape, spacing, jitter=0.38, margin=spacing)
    centres = centres[rng.random(len(centres)) < 0.85]
    radii = rng.uniform(15.0, 50.0, len(centres)) * px
    mask = warp(rng, disk_mask(shape, centres, radii, rng).astype(np.float32), 3.0 * px, 25.0 * px)
    inside = blur(mask, 2.5 * px)
    halo = np.clip(blur(mask, 8.0 * px) - inside, 0, 1)
    packed = cells(rng, shape, jittered_points(rng, shape, 6.5 * px, jitter=0.3), 3.0 * px, brightness_cv=0.3)
    base = _dermis(rng, shape, px, _u(rng, 0.12, 0.17))
    remnant = smooth_field(rng, shape, 200.0 * px) > 0.5
    base = np.where(remnant, 0.6 * epidermis(rng, shape, px, regularity=0.7), base)
    nest = _u(rng, 0.3, 0.42) * (0.65 + 0.4 * np.clip(packed, 0, 1.5))
    tex = base * (1 - inside) * (1 - 0.5 * halo) + inside * nest
    return blur(tex, 0.8 * px)


def _dendrites(rng: np.random.Generator, shape: Shape, px: float, density: float) -> np.ndarray:
    """Bright dendritic cells: a body with two to five branching, curving processes."""
    canvas = np.zeros(shape, dtype=np.float32)
    for cy, cx in random_points(rng, shape, density):
        amp = _u(rng, 0.5, 1.0)
        body = max(round(_u(rng, 3.0, 6.0) * px), 1)
        cv2.ellipse(canvas, (int(cx), int(cy)), (body, max(body - 1, 1)), _u(rng, 0, 180), 0, 360, amp, -1)
        for _ in range(int(rng.integers(2, 6))):
            y, x, angle = float(cy), float(cx), _u(rng, 0, 2 * np.pi)
            length = _u(rng, 15.0, 60.0) * px
            thick = max(round(_u(rng, 1.0, 2.5) * px), 1)
            for _seg in range(3):
                angle += rng.normal(0, 0.35)
                ny, nx = y + np.sin(angle) * length / 3, x + np.cos(angle) * length / 3
                cv2.line(canvas, (int(x), int(y)), (int(nx), int(ny)), amp * 0.8, thick)
                y, x = ny, nx
    return blur(canvas, 1.2 * px)


def _pleomorphic(rng: np.random.Generator, shape: Shape, px: float, density: float) -> np.ndarray:
    """Irregular bright cells of very different sizes and elongations at random orientations."""
    canvas = np.zeros(shape, dtype=np.float32)
    for cy, cx in random_points(rng, shape, density):
        a = _u(rng, 3.0, 9.0) * px
        b = a / _u(rng, 1.0, 2.2)
        axes = (max(int(a), 1), max(int(b), 1))
        cv2.ellipse(canvas, (int(cx), int(cy)), axes, _u(rng, 0, 180), 0, 360, _u(rng, 0.4, 1.0), -1)
    return blur(canvas, 1.5 * px)


def aspecific(rng: np.random.Generator, shape: Shape, px: float) -> np.ndarray:
    """Aspecific pattern: loss of architecture, scattered atypical and dendritic cells, non-edged papillae."""
    area_um2 = 1.0 / (px * px)
    tex = 0.22 + 0.06 * smooth_field(rng, shape, _u(rng, 20.0, 45.0) * px)
    tex += 0.04 * smooth_field(rng, shape, 6.0 * px)
    tex += 0.03 * warp(rng, fibres(rng, shape, _u(rng, 15.0, 40.0) * px, 2.0 * px), 6.0 * px, 30.0 * px)
    ghost = epidermis(rng, shape, px, regularity=0.0) - 0.26
    tex += _u(rng, 0.15, 0.35) * warp(rng, ghost, 6.0 * px, 20.0 * px)
    nonedged = np.clip(smooth_field(rng, shape, _u(rng, 50.0, 90.0) * px) - 1.0, 0, 1)
    tex -= 0.1 * blur(nonedged, 3.0 * px)
    cell_density = area_um2 / _u(rng, 25.0, 45.0) ** 2
    dendrite_density = area_um2 / _u(rng, 60.0, 110.0) ** 2
    small = cells(rng, shape, random_points(rng, shape, cell_density * 0.8), 2.5 * px, brightness_cv=0.5)
    tex += _u(rng, 0.2, 0.35) * _pleomorphic(rng, shape, px, cell_density) + 0.12 * small
    return tex + _u(rng, 0.25, 0.4) * _dendrites(rng, shape, px, dendrite_density)


def mimic_cells(rng: np.random.Generator, shape: Shape, px: float, strength: float) -> np.ndarray:
    """Bright dendritic and pleomorphic cells in benign tissue (inflammation, sun damage, trauma), at up to
    the aspecific pattern's density and brightness (``strength`` 0..1); added to a texture."""
    area_um2 = 1.0 / (px * px)
    cell_density = strength * area_um2 / _u(rng, 25.0, 45.0) ** 2
    dendrite_density = strength * area_um2 / _u(rng, 60.0, 110.0) ** 2
    tex = _u(rng, 0.2, 0.35) * _pleomorphic(rng, shape, px, cell_density)
    return tex + _u(rng, 0.25, 0.4) * _dendrites(rng, shape, px, dendrite_density)


def _streaks(rng: np.random.Generator, shape: Shape, px: float, base: np.ndarray) -> np.ndarray:
    h, w = shape
    canvas = np.zeros(shape, dtype=np.float32)
    horizontal = rng.random() < 0.7
    n = int(max(h, w) / (_u(rng, 15.0, 45.0) * px))
    for _ in range(n):
        pos, thick = _u(rng, 0, h if horizontal else w), max(int(_u(rng, 1.0, 5.0) * px), 1)
        amp, tilt = _u(rng, 0.3, 1.0), rng.normal(0, 0.04) * (w if horizontal else h)
        if horizontal:
            cv2.line(canvas, (0, int(pos)), (w, int(pos + tilt)), amp, thick)
        else:
            cv2.line(canvas, (int(pos), 0), (int(pos + tilt), h), amp, thick)
    k = max(int(_u(rng, 10.0, 40.0) * px), 3)
    kernel = (k, 1) if horizontal else (1, k)
    canvas = cv2.blur(canvas, kernel) * 1.5
    return base * 0.8 + canvas


def _fold(rng: np.random.Generator, shape: Shape, px: float, base: np.ndarray) -> np.ndarray:
    h, w = shape
    mask = np.zeros(shape, dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        y0, y1 = _u(rng, 0, h), _u(rng, 0, h)
        xs = np.linspace(-0.1 * w, 1.1 * w, 12)
        ys = np.linspace(y0, y1, 12) + smooth_field(rng, (1, 12), 3.0)[0] * _u(rng, 10, 60) * px
        pts = np.stack([xs, ys], axis=1).astype(np.int32)
        if rng.random() < 0.5:
            pts = pts[:, ::-1] * np.array([h / max(w, 1), w / max(h, 1)])
        cv2.polylines(mask, [pts.astype(np.int32)], False, 1, max(int(_u(rng, 40.0, 120.0) * px), 2))
    soft = blur(mask.astype(np.float32), 6.0 * px)
    edge = np.clip(soft * (1 - soft) * 4, 0, 1)
    return base * (1 - 0.85 * soft) + 0.45 * edge * (0.5 + smooth_field(rng, shape, 8.0 * px) * 0.3)


def _saturated(rng: np.random.Generator, shape: Shape, px: float, base: np.ndarray) -> np.ndarray:
    blob = np.clip((smooth_field(rng, shape, _u(rng, 150.0, 300.0) * px) - 1.0) * 1.5, 0, 1)
    return base * (1 - blob) + blob * _u(rng, 0.9, 1.3)


def _blank(rng: np.random.Generator, shape: Shape, px: float, base: np.ndarray) -> np.ndarray:
    blob = np.clip((smooth_field(rng, shape, _u(rng, 150.0, 300.0) * px) + 0.2) * 1.5, 0, 1)
    rim = np.clip(blob * (1 - blob) * 4, 0, 1) * _u(rng, 0.0, 0.5)
    return base * (1 - blob) + blob * _u(rng, 0.01, 0.06) + rim


def _defocus(rng: np.random.Generator, shape: Shape, px: float, base: np.ndarray) -> np.ndarray:
    return blur(base, _u(rng, 5.0, 12.0) * px) * _u(rng, 0.6, 1.0)


ARTIFACTS = {
    "streaks": _streaks,
    "fold": _fold,
    "saturated": _saturated,
    "blank": _blank,
    "defocus": _defocus,
}


def artifact(rng: np.random.Generator, shape: Shape, px: float) -> np.ndarray:
    """Acquisition artifacts over tissue: scan streaks, dark folds, glare, blank or defocused areas."""
    tex = epidermis(rng, shape, px, regularity=0.5)
    kinds = rng.choice(list(ARTIFACTS), size=int(rng.integers(1, 3)), replace=False)
    for kind in kinds:
        tex = ARTIFACTS[str(kind)](rng, shape, px, tex)
    return tex


def mild_atypia(rng: np.random.Generator, shape: Shape, px: float) -> np.ndarray:
    """Mild atypia (left unlabelled): a preserved pattern partly disrupted, with some atypical cells."""
    lesion = [ring, meshwork, nested][int(rng.integers(0, 3))](rng, shape, px)
    lesion = warp(rng, lesion, 8.0 * px, 30.0 * px)
    mix = np.clip(0.5 + 0.35 * smooth_field(rng, shape, 120.0 * px), 0.15, 0.85)
    return mix * lesion + (1 - mix) * aspecific(rng, shape, px)


MILD = 7
"""Texture code of the mild-atypia blend; it is never a label (its pixels are labelled 0)."""

RENDERERS: dict[int, Renderer] = {
    1: non_lesion,
    2: artifact,
    3: meshwork,
    4: nested,
    5: ring,
    6: aspecific,
    MILD: mild_atypia,
}
