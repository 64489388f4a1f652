"""From pixel-annotated mosaics to weakly labelled patches, as in D'Alonzo et al. 2021 ("Dataset").

1. Split the patients 70/10/20 into train/val/test so that each split holds about the same share of every
   class's labelled pixels.
2. For each class draw random labelled centre pixels; the patch is the 500 x 500 window (1 mm at 2 um/px)
   centred there and takes the centre pixel's class. Each benign class gets about ``per_class`` patches and
   aspecific as many as all benign classes together; each mosaic contributes in proportion to its labelled
   pixels of that class.

Only coordinates are produced: patches are cropped later from memory-mapped mosaics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from models.errors import InvalidParameter
from models.labels import ASPECIFIC, BENIGN_CODES, LABEL_CODES

PATCH = 500
"""Side of a weakly labelled patch at the processing pixel size (1 mm at 2 um/px)."""

SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
CLASS_CODES = (*BENIGN_CODES, ASPECIFIC)
NUM_CODES = len(LABEL_CODES)


@dataclass(frozen=True)
class Draw:
    """Centre pixels drawn in one mosaic: x, y at the processing pixel size and their label codes."""

    x: np.ndarray
    y: np.ndarray
    code: np.ndarray


def class_targets(per_class: int) -> dict[int, int]:
    """Patches wanted per code: ``per_class`` for each benign class, five times that for aspecific."""
    if per_class < 1:
        raise InvalidParameter(f"per-class count must be >= 1, got {per_class}")
    targets = dict.fromkeys(BENIGN_CODES, per_class)
    targets[ASPECIFIC] = per_class * len(BENIGN_CODES)
    return targets


def centre_window(shape: tuple[int, int], patch: int = PATCH) -> tuple[slice, slice]:
    """Centre pixels whose ``patch`` x ``patch`` window lies entirely inside a mosaic of ``shape``."""
    h, w = shape
    if h < patch or w < patch:
        raise InvalidParameter(f"mosaic of {w} x {h} px is smaller than one {patch} px patch")
    half = patch // 2
    return slice(half, h - (patch - half) + 1), slice(half, w - (patch - half) + 1)


def centre_counts(labels: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """Pixels per code (0..6) among the valid centre pixels of a label map."""
    rows, cols = centre_window(labels.shape, patch)
    inner = labels[rows, cols]
    if inner.size and int(inner.max()) >= NUM_CODES:
        raise InvalidParameter(f"label map holds code {int(inner.max())}; codes are 0..{NUM_CODES - 1}")
    return np.bincount(inner.ravel(), minlength=NUM_CODES).astype(np.int64)


def _split_sizes(n: int, fractions: Sequence[float]) -> list[int]:
    if n < len(fractions):
        raise InvalidParameter(f"need at least {len(fractions)} patients for a train/val/test split, got {n}")
    sizes = [max(1, round(f * n)) for f in fractions[1:]]
    train = n - sum(sizes)
    if train < 1:
        raise InvalidParameter(f"{n} patients are too few for a train/val/test split")
    return [train, *sizes]


def split_patients(
    counts: Mapping[str, np.ndarray],
    *,
    seed: int,
    fractions: Sequence[float] = SPLIT_FRACTIONS,
    tries: int = 4000,
) -> dict[str, str]:
    """Patient to split, with patient counts as ``fractions`` and class pixel shares kept alike.

    ``counts`` maps a patient to its labelled pixels per code (0..6). Among ``tries`` random patient
    orders, the one whose splits hold each class's pixels closest to ``fractions`` wins; a split that
    lacks a class present in the data is penalised so that every split can be evaluated.
    """
    patients = sorted(counts)
    sizes = _split_sizes(len(patients), fractions)
    mat = np.stack([np.asarray(counts[p], dtype=np.float64)[list(CLASS_CODES)] for p in patients])
    totals = mat.sum(axis=0)
    present = totals > 0
    target = np.asarray(fractions, dtype=np.float64)[:, None]
    rng = np.random.default_rng(seed)
    bounds = np.cumsum([0, *sizes])
    best_score, best_order = np.inf, np.arange(len(patients))
    for _ in range(max(tries, 1)):
        order = rng.permutation(len(patients))
        per_split = np.stack([mat[order[bounds[k] : bounds[k + 1]]].sum(axis=0) for k in range(len(sizes))])
        shares = per_split[:, present] / totals[present]
        score = float(((shares - target) ** 2).sum()) + float((per_split[:, present] == 0).sum())
        if score < best_score:
            best_score, best_order = score, order
    return {patients[i]: SPLITS[k] for k in range(len(sizes)) for i in best_order[bounds[k] : bounds[k + 1]]}


def allocate(total: int, weights: np.ndarray) -> np.ndarray:
    """Split ``total`` draws in proportion to ``weights`` (largest remainder, deterministic)."""
    weights = np.asarray(weights, dtype=np.float64)
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), dtype=np.int64)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    remainder = exact - counts
    order = np.lexsort((np.arange(len(weights)), -remainder))
    counts[order[: total - int(counts.sum())]] += 1
    return counts


def plan_draws(counts: np.ndarray, per_class: int) -> np.ndarray:
    """Patches to draw per mosaic (rows) and code (columns 0..6), proportional to labelled pixels."""
    counts = np.asarray(counts, dtype=np.int64)
    plan = np.zeros_like(counts)
    for code, wanted in class_targets(per_class).items():
        plan[:, code] = allocate(wanted, counts[:, code])
    return plan


def draw_centres(
    labels: np.ndarray, wanted: Mapping[int, int], rng: np.random.Generator, patch: int = PATCH
) -> Draw:
    """Random centre pixels of each code, whose patch lies inside the mosaic; with replacement only if
    a mosaic has fewer such pixels than draws."""
    rows, cols = centre_window(labels.shape, patch)
    inner = labels[rows, cols]
    xs, ys, codes = [], [], []
    for code, n in sorted(wanted.items()):
        if n <= 0:
            continue
        flat = np.flatnonzero(inner == code)
        if flat.size == 0:
            raise InvalidParameter(f"no pixel of code {code} to draw {n} patch centre(s) from")
        pick = rng.choice(flat, size=n, replace=n > flat.size)
        y, x = np.divmod(pick, inner.shape[1])
        ys.append(y + rows.start)
        xs.append(x + cols.start)
        codes.append(np.full(n, code, dtype=np.int64))
    if not codes:
        empty = np.zeros(0, dtype=np.int64)
        return Draw(x=empty, y=empty, code=empty)
    return Draw(x=np.concatenate(xs), y=np.concatenate(ys), code=np.concatenate(codes))


def downsample_labels(labels: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour label map at ``factor`` times the pixel size (the centre of each block)."""
    if factor < 1:
        raise InvalidParameter(f"downsample factor must be >= 1, got {factor}")
    if factor == 1:
        return labels
    h, w = (labels.shape[0] // factor) * factor, (labels.shape[1] // factor) * factor
    return np.ascontiguousarray(labels[factor // 2 : h : factor, factor // 2 : w : factor])


def split_summary(counts: Mapping[str, np.ndarray], split: Mapping[str, str]) -> dict[str, dict[str, object]]:
    """Patients and labelled pixels per class in each split, with each split's share of each class."""
    totals = np.sum([np.asarray(c, dtype=np.int64) for c in counts.values()], axis=0)
    out: dict[str, dict[str, object]] = {}
    for name in SPLITS:
        members = sorted(p for p, s in split.items() if s == name)
        pix = np.sum([np.asarray(counts[p], dtype=np.int64) for p in members], axis=0) if members else None
        pix = pix if pix is not None else np.zeros(NUM_CODES, dtype=np.int64)
        out[name] = {
            "patients": members,
            "pixels": {LABEL_CODES[c]: int(pix[c]) for c in CLASS_CODES},
            "share": {
                LABEL_CODES[c]: round(float(pix[c] / totals[c]), 4) if totals[c] else 0.0 for c in CLASS_CODES
            },
        }
    return out
