"""How hard a phantom is: how far the drawn patterns of benign and aspecific tissue overlap.

D'Alonzo et al. 2021 ("Introduction") describe what makes the real task hard, and each knob stands for one
of those statements:

- ``contrast``: "cellular patterns ... that can change appearance under speckle noise": each pattern's
  architecture (its detail under about 20 um, around the local mean) is scaled by this factor, so at 0.5
  the cords, rims and cells stand half as far above the speckle.
- ``overlap``: "these patterns can also show varying degrees of atypia or disruption" and the aspecific
  pattern is "often [the] result of complete disruption of the ring, meshwork, or nested patterns":
  labelled benign ring, meshwork and nests are partly disrupted (blended with aspecific tissue, up to half
  at 1), and aspecific regions keep remnants of a preserved pattern (the same blend the other way). The
  pattern statistics of the two classes then overlap, as the mild atypia the annotators left out does.
- ``mimics``: "the aspecific pattern can also be related to the anatomical site (e.g. face especially with
  severe sun damage), trauma, or inflammation": benign tissue, artifacts included, gets bright dendritic
  and pleomorphic inflammatory cells like those that mark aspecific tissue, at up to the aspecific density.
- ``noise``: more speckle (fewer looks) and optical blur that dims the finest structure.
- ``boundary_um``: "morphological patterns ... do not adhere to strict borders, with ill-defined
  transitions": patterns blend over wider borders, and the annotator's label map is displaced from the
  drawn patterns by a smooth field of about this many micrometres (so labels near borders can be wrong).

Every knob at its default leaves the generator exactly as it was: the effects draw from their own random
stream (:func:`difficulty_rng`) and are skipped when off, so a default phantom is bit for bit the same.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import cv2
import numpy as np

from models.errors import InvalidParameter
from models.phantom.noise import Shape, blur, smooth_field
from models.phantom.textures import aspecific, meshwork, mimic_cells, nested, ring

BASE_BORDER_UM = 8.0
"""Width (Gaussian sigma) of the blend between neighbouring patterns at the default difficulty."""


@dataclass(frozen=True, kw_only=True)
class Difficulty:
    """The knobs (module doc); the defaults are today's phantoms."""

    contrast: float = 1.0
    overlap: float = 0.0
    mimics: float = 0.0
    noise: float = 0.0
    boundary_um: float = 0.0

    def __post_init__(self) -> None:
        if not 0.1 <= self.contrast <= 1.0:
            raise InvalidParameter(f"contrast must be in 0.1..1, got {self.contrast}")
        for name in ("overlap", "mimics", "noise"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidParameter(f"{name} must be in 0..1, got {value}")
        if not 0.0 <= self.boundary_um <= 100.0:
            raise InvalidParameter(f"boundary_um must be in 0..100 um, got {self.boundary_um}")

    @property
    def is_default(self) -> bool:
        return self == Difficulty()

    def as_dict(self) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}

    def describe(self) -> str:
        """``name=value`` pairs, the form :func:`parse_difficulty` reads."""
        return ",".join(f"{k}={v:g}" for k, v in self.as_dict().items())


PRESETS: dict[str, Difficulty] = {
    "default": Difficulty(),
    "moderate": Difficulty(contrast=0.8, overlap=0.25, mimics=0.25, noise=0.2, boundary_um=15.0),
    "hard": Difficulty(contrast=0.6, overlap=0.5, mimics=0.5, noise=0.4, boundary_um=30.0),
    "harder": Difficulty(contrast=0.45, overlap=0.8, mimics=0.8, noise=0.7, boundary_um=50.0),
}
"""Named settings. ``moderate`` is the demo model's: trained on it with the CPU schedule it reaches a held-out
patch AUC of 0.971 (the paper: 0.947); on ``hard`` and ``harder`` that schedule does not learn (test AUC
about 0.5), and they are kept for longer schedules (docs/phantom.md)."""


def parse_difficulty(text: str) -> Difficulty:
    """``default``, a preset name, ``name=value`` pairs, or a preset followed by pairs that override it
    (``hard,noise=0.2``)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise InvalidParameter("difficulty is empty")
    base = Difficulty()
    if "=" not in parts[0]:
        if parts[0] not in PRESETS:
            raise InvalidParameter(f"unknown difficulty preset {parts[0]!r}; presets: {', '.join(PRESETS)}")
        base = PRESETS[parts[0]]
        parts = parts[1:]
    names = {f.name for f in fields(Difficulty)}
    changes: dict[str, float] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or name not in names:
            raise InvalidParameter(
                f"difficulty setting {part!r}: expected NAME=VALUE, NAME one of {', '.join(sorted(names))}"
            )
        try:
            changes[name] = float(value)
        except ValueError:
            raise InvalidParameter(f"difficulty setting {part!r}: {value!r} is not a number") from None
    return replace(base, **changes)


def difficulty_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of the difficulty effects of mosaic ``index``, apart from the pattern stream."""
    return np.random.default_rng([int(seed), int(index), 2])


def border_sigma_um(d: Difficulty) -> float:
    return BASE_BORDER_UM + 0.5 * d.boundary_um


def harden_texture(
    rng: np.random.Generator, tex: np.ndarray, code: int, px: float, d: Difficulty
) -> np.ndarray:
    """Apply overlap, mimics and contrast to the texture of pattern ``code``."""
    shape: Shape = tex.shape  # type: ignore[assignment]
    if d.overlap > 0 and code in (3, 4, 5, 6):
        # a disruption that varies over the region, from none to ``overlap / 2``
        amount = 0.5 * d.overlap * np.clip(0.5 + 0.5 * smooth_field(rng, shape, 150.0 * px), 0.0, 1.0)
        if code == 6:
            other = [ring, meshwork, nested][int(rng.integers(0, 3))](rng, shape, px)
        else:
            other = aspecific(rng, shape, px)
        tex = (1.0 - amount) * tex + amount * other
    if d.mimics > 0 and code in (1, 2, 3, 4, 5):
        tex = tex + mimic_cells(rng, shape, px, d.mimics)
    if d.contrast < 1.0:
        # the cellular architecture (detail under about 20 um) fades; slow changes (folds, glare) stay
        slow = blur(tex, 20.0 * px)
        tex = slow + d.contrast * (tex - slow)
    return tex.astype(np.float32, copy=False)


def harden_acquisition(rng: np.random.Generator, tissue: np.ndarray, px: float, d: Difficulty) -> np.ndarray:
    """Optical blur before the speckle (``noise``)."""
    if d.noise <= 0:
        return tissue
    return blur(tissue, d.noise * 1.5 * px)


def extra_speckle(rng: np.random.Generator, shape: Shape, looks: float, d: Difficulty) -> np.ndarray | None:
    """A second unit-mean speckle of ``looks / (6 noise)`` looks: at noise 1 the fine-scale noise of a
    phantom about 2.6 times today's."""
    if d.noise <= 0:
        return None
    extra = looks / (6.0 * d.noise)
    return rng.gamma(extra, 1.0 / extra, shape).astype(np.float32)


def uncertain_labels(
    rng: np.random.Generator, labels: np.ndarray, scanned: np.ndarray, px: float, d: Difficulty
) -> np.ndarray:
    """The annotator's label map displaced by a smooth field of about ``boundary_um`` (nearest label)."""
    if d.boundary_um <= 0:
        return labels
    h, w = labels.shape
    scale = 300.0 * px
    dy = smooth_field(rng, (h, w), scale) * d.boundary_um * px
    dx = smooth_field(rng, (h, w), scale) * d.boundary_um * px
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    moved = cv2.remap(
        labels, gx + dx, gy + dy, interpolation=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT
    )
    moved[~scanned] = 0
    return moved
