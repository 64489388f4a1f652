"""Where each pattern lies in a phantom mosaic and which of its pixels an expert would have labelled.

The class proportions follow Table 1 of D'Alonzo et al. 2021 (share of labelled pixels, and the number of
patients in which each pattern occurs); about 38 % of the scanned pixels are labelled, with unlabelled bands
along class borders, unlabelled "mild atypia" zones and unannotated areas, as in the paper's annotations.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from models.labels import ASPECIFIC, BENIGN_CODES
from models.phantom.noise import Shape, smooth_field
from models.phantom.textures import MILD

LABEL_SHARE: dict[int, float] = {1: 0.14, 2: 0.17, 3: 0.17, 4: 0.05, 5: 0.34, 6: 0.12}
"""Share of labelled pixels per code (Table 1: background, artifact, mesh, nest, ring, aspecific)."""

PRESENCE: dict[int, float] = {1: 106 / 157, 2: 52 / 157, 3: 70 / 157, 4: 70 / 157, 5: 82 / 157, 6: 80 / 157}
"""Fraction of the 157 patients whose mosaic holds each pattern (Table 1)."""

AREA_CORRECTION: dict[int, float] = {1: 0.6, 2: 0.9, 3: 0.9, 4: 1.05, 5: 1.8, 6: 0.8}
"""Border bands and mild-atypia zones take labels from some classes more than others; these factors
(measured over 60 mosaics) bring the labelled shares of a phantom set back to Table 1."""

LABELLED_FRACTION = 0.38
LESION_CODES = (3, 4, 5)


@dataclass(frozen=True)
class Layout:
    """Texture code per pixel (0 outside the scanned area, 7 mild atypia) and the label map (codes 0..6)."""

    texture: np.ndarray
    labels: np.ndarray
    scanned: np.ndarray


def scanned_area(rng: np.random.Generator, shape: Shape, field_px: float) -> np.ndarray:
    """The fields the microscope acquired: a rounded block of 0.5 mm fields, black outside."""
    h, w = shape
    rows, cols = int(np.ceil(h / field_px)), int(np.ceil(w / field_px))
    fields = np.ones((rows, cols), dtype=bool)
    if rng.random() < 0.6 and rows > 2 and cols > 2:
        cy, cx = (rows - 1) / 2, (cols - 1) / 2
        ry, rx = rows / 2 * rng.uniform(1.0, 1.25), cols / 2 * rng.uniform(1.0, 1.25)
        power = rng.uniform(2.5, 5.0)
        gy, gx = np.mgrid[0:rows, 0:cols]
        fields = (np.abs((gy - cy) / ry) ** power + np.abs((gx - cx) / rx) ** power) <= 1.0
    mask = np.kron(fields, np.ones((int(np.ceil(field_px)),) * 2, dtype=bool))[:h, :w]
    # the last field of a row or column is usually cut by the canvas: keep a partial black strip
    if rng.random() < 0.5:
        mask[:, w - int(rng.uniform(0.0, 0.4) * field_px) :] = False
    if mask.mean() < 0.5:
        mask[:] = True
    return mask


def choose_classes(rng: np.random.Generator) -> dict[int, float]:
    """Patterns present in this mosaic and each one's target share of the scanned area."""
    present = [c for c, p in PRESENCE.items() if rng.random() < p]
    if not any(c in BENIGN_CODES for c in present):
        present.append(int(rng.choice(BENIGN_CODES)))
    shares = {c: LABEL_SHARE[c] * AREA_CORRECTION[c] / PRESENCE[c] * rng.gamma(3.0, 1 / 3.0) for c in present}
    lesion = sum(shares.get(c, 0.0) for c in LESION_CODES)
    if lesion > 0 and rng.random() < 0.55:
        shares[MILD] = 0.35 * lesion * rng.gamma(3.0, 1 / 3.0)
    total = sum(shares.values())
    return {c: s / total for c, s in shares.items()}


def _fit_bias(scores: np.ndarray, targets: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Per-class offsets so that the argmax of score + offset covers each class's target share."""
    bias = np.zeros(len(targets), dtype=np.float32)
    for _ in range(60):
        winner = np.argmax(scores + bias[:, None, None], axis=0)[inside]
        share = np.bincount(winner, minlength=len(targets)) / max(winner.size, 1)
        bias += 0.4 * (np.log(targets) - np.log(share + 1e-3))
        bias -= bias.mean()
    return bias


def region_map(
    rng: np.random.Generator, shape: Shape, px: float, shares: dict[int, float], scanned: np.ndarray
) -> np.ndarray:
    """Texture codes with irregular smooth borders: the argmax of one smooth random field per class."""
    h, w = shape
    codes = list(shares)
    cell = 20.0 * px
    ch, cw = max(int(h / cell), 8), max(int(w / cell), 8)
    coarse = np.stack([smooth_field(rng, (ch, cw), rng.uniform(450, 900) / 20.0) for _ in codes])
    inside = cv2.resize(scanned.astype(np.uint8), (cw, ch), interpolation=cv2.INTER_NEAREST) > 0
    bias = _fit_bias(coarse, np.array([shares[c] for c in codes], dtype=np.float32), inside)
    best = np.full(shape, -np.inf, dtype=np.float32)
    texture = np.zeros(shape, dtype=np.uint8)
    for k, code in enumerate(codes):
        score = cv2.resize(coarse[k] + bias[k], (w, h), interpolation=cv2.INTER_LINEAR)
        score += 0.06 * smooth_field(rng, shape, 80.0 * px)
        better = score > best
        best[better] = score[better]
        texture[better] = code
    texture[~scanned] = 0
    return texture


def label_map(
    rng: np.random.Generator, texture: np.ndarray, px: float, scanned: np.ndarray, fraction: float
) -> np.ndarray:
    """Labels an annotator would draw: region interiors away from borders, part of them, never mild atypia."""
    border = np.zeros(texture.shape, dtype=bool)
    border[:-1, :] |= texture[:-1, :] != texture[1:, :]
    border[:, :-1] |= texture[:, :-1] != texture[:, 1:]
    to_border = cv2.distanceTransform((~border).astype(np.uint8), cv2.DIST_L2, 5)
    band = rng.uniform(20.0, 60.0) * px
    candidate = (to_border > band) & scanned & (texture >= 1) & (texture <= ASPECIFIC)
    labels = np.zeros(texture.shape, dtype=np.uint8)
    if not candidate.any():
        return labels
    annotate = smooth_field(rng, texture.shape, rng.uniform(300.0, 700.0) * px)
    wanted = fraction * texture.size / candidate.sum()
    if wanted < 1.0:
        cut = np.quantile(annotate[candidate], 1.0 - wanted)
        candidate &= annotate >= cut
    labels[candidate] = texture[candidate]
    return labels


def make_layout(rng: np.random.Generator, shape: Shape, px: float, field_px: float) -> Layout:
    """Scanned area, pattern regions and labels of one mosaic."""
    scanned = scanned_area(rng, shape, field_px)
    texture = region_map(rng, shape, px, choose_classes(rng), scanned)
    fraction = float(np.clip(rng.normal(LABELLED_FRACTION, 0.08), 0.2, 0.6))
    labels = label_map(rng, texture, px, scanned, fraction)
    return Layout(texture=texture, labels=labels, scanned=scanned)
