"""How well simple texture statistics tell aspecific from benign patches: a cheap gauge of phantom difficulty.

A network is the real judge (its held-out patch AUC), but training one takes a GPU or an hour of CPU. This
gauge takes seconds: a few phantoms, small patches centred on pixels of a drawn pattern (the texture truth,
not the label map, so that every difficulty is gauged on the same patches: the layout does not change with
it), a dozen texture statistics per patch, and a logistic regression fitted on half of the mosaics and
scored (ROC AUC, aspecific against benign) on the other half, and the other way round. Harder settings of
:class:`models.phantom.difficulty.Difficulty` should lower it; its level says nothing of a network's.
Label-boundary uncertainty changes the labels, not the pixels, and is measured by :func:`label_agreement`.

``python -m models.phantom.separability --difficulty hard`` prints it for a preset or setting.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass

import cv2
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from models.labels import ASPECIFIC
from models.phantom.difficulty import Difficulty, parse_difficulty
from models.phantom.generate import Phantom, PhantomParams, render_phantom


@dataclass(frozen=True, kw_only=True)
class GaugeParams:
    """The phantoms and patches the gauge draws (all at 2 um/px)."""

    mosaics: int = 12
    side: int = 640
    patch: int = 64
    per_mosaic: int = 60
    seed: int = 0


def patch_features(patch: np.ndarray) -> np.ndarray:
    """Intensity quantiles, contrast, edge and blob energies, and autocorrelation at 2, 4 and 8 px."""
    x = patch.astype(np.float32) / 255.0
    q = np.quantile(x, [0.1, 0.5, 0.9, 0.99])
    lap = cv2.Laplacian(x, cv2.CV_32F)
    gy, gx = np.gradient(x)
    centred = x - x.mean()
    var = float((centred**2).mean()) + 1e-8
    ac = [float((centred[:, :-k] * centred[:, k:]).mean() + (centred[:-k] * centred[k:]).mean()) / (2 * var)
          for k in (2, 4, 8)]  # fmt: skip
    blobs = cv2.GaussianBlur(x, (0, 0), 3.0) - cv2.GaussianBlur(x, (0, 0), 6.0)
    bright = float((x > x.mean() + 2.0 * x.std()).mean())
    return np.array(
        [*q, x.std(), np.abs(lap).mean(), np.hypot(gy, gx).mean(), blobs.std(), bright, *ac], dtype=np.float64
    )


def _patches(
    image: np.ndarray, texture: np.ndarray, rng: np.random.Generator, params: GaugeParams
) -> tuple[list[np.ndarray], list[int]]:
    """Up to ``per_mosaic`` patches per class, centred on pattern pixels whose patch lies inside."""
    half = params.patch // 2
    inner = np.zeros(texture.shape, dtype=bool)
    inner[half : texture.shape[0] - half, half : texture.shape[1] - half] = True
    feats, ys = [], []
    benign = (texture >= 1) & (texture < ASPECIFIC)
    for positive, mask in ((1, texture == ASPECIFIC), (0, benign)):
        where = np.flatnonzero((mask & inner).ravel())
        if not where.size:
            continue
        for flat in rng.choice(where, size=min(params.per_mosaic, where.size), replace=False):
            y, x = divmod(int(flat), texture.shape[1])
            feats.append(patch_features(image[y - half : y + half, x - half : x + half]))
            ys.append(positive)
    return feats, ys


def _phantoms(difficulty: Difficulty, params: GaugeParams) -> Iterator[Phantom]:
    """The gauge's phantoms, drawn one at a time."""
    for i in range(params.mosaics):
        yield render_phantom(
            PhantomParams(width=params.side, height=params.side),
            seed=params.seed,
            index=i,
            difficulty=difficulty,
        )


def separability(difficulty: Difficulty, params: GaugeParams | None = None) -> float:
    """Held-out ROC AUC of a logistic regression on :func:`patch_features`; deterministic for ``params``."""
    params = params or GaugeParams()
    rng = np.random.default_rng(params.seed)
    sets: list[tuple[list[np.ndarray], list[int]]] = [([], []), ([], [])]
    for i, ph in enumerate(_phantoms(difficulty, params)):
        feats, ys = _patches(ph.image, ph.texture, rng, params)
        sets[i % 2][0].extend(feats)
        sets[i % 2][1].extend(ys)
    if any(len(set(ys)) < 2 for _, ys in sets):
        raise ValueError("the gauge's phantoms need both classes on each half; draw more or larger mosaics")
    aucs = []
    for (x_fit, y_fit), (x_test, y_test) in (sets, sets[::-1]):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(np.array(x_fit), np.array(y_fit))
        aucs.append(roc_auc_score(y_test, model.predict_proba(np.array(x_test))[:, 1]))
    return float(np.mean(aucs))


def label_agreement(difficulty: Difficulty, params: GaugeParams | None = None) -> float:
    """Share of labelled pixels whose label is the drawn pattern's class (aspecific or benign)."""
    params = params or GaugeParams()
    agree = total = 0
    for ph in _phantoms(difficulty, params):
        labelled = (ph.labels > 0) & (ph.texture > 0)
        same = (ph.labels == ASPECIFIC) == (ph.texture == ASPECIFIC)
        agree += int((labelled & same).sum())
        total += int(labelled.sum())
    return agree / max(total, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--difficulty", nargs="+", default=["default"], help="presets or NAME=VALUE settings")
    parser.add_argument("--mosaics", type=int, default=GaugeParams.mosaics)
    parser.add_argument("--side", type=int, default=GaugeParams.side)
    args = parser.parse_args(argv)
    params = GaugeParams(mosaics=args.mosaics, side=args.side)
    for text in args.difficulty:
        d = parse_difficulty(text)
        auc, agreement = separability(d, params), label_agreement(d, params)
        print(f"{text:>20}  ({d.describe()}): patch AUC {auc:.3f}, labels agree {agreement:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
