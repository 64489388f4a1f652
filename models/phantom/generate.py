"""One phantom mosaic: layout, pattern textures blended across soft borders, then acquisition nuisances."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.errors import InvalidParameter
from models.phantom.difficulty import (
    Difficulty,
    border_sigma_um,
    difficulty_rng,
    extra_speckle,
    harden_acquisition,
    harden_texture,
    uncertain_labels,
)
from models.phantom.layout import make_layout
from models.phantom.noise import blur, smooth_field
from models.phantom.nuisance import field_gain, furrows, illumination, speckle
from models.phantom.textures import RENDERERS

FIELD_UM = 500.0
"""Side of one microscope field of view (VivaScope 1500: about 0.5 mm)."""

MIN_SIDE_UM = 3500.0
MAX_SIDE_UM = 6000.0
"""The command line's default range of mosaic sides, like the paper's mosaics: 1750-3000 px at 2 um/px,
7000-12000 px at 0.5 um/px."""
LEAST_SIDE_UM = FIELD_UM
"""The smallest side the command line accepts: one microscope field (250 px at 2 um/px), for a quick try.
The generator itself draws down to 0.3 mm (``PhantomParams``)."""


@dataclass(frozen=True, kw_only=True)
class PhantomParams:
    """Size and pixel size of one phantom mosaic."""

    width: int = 1750
    height: int = 1750
    pixel_size_um: float = 2.0

    def __post_init__(self) -> None:
        if not 0.25 <= self.pixel_size_um <= 4.0:
            raise InvalidParameter(f"pixel size must be in 0.25..4 um, got {self.pixel_size_um}")
        least = int(np.ceil(300.0 / self.pixel_size_um))
        if self.width < least or self.height < least:
            raise InvalidParameter(
                f"mosaic must be at least {least} px (0.3 mm) a side, got {self.width} x {self.height}"
            )

    @property
    def px_per_um(self) -> float:
        return 1.0 / self.pixel_size_um


@dataclass(frozen=True)
class Phantom:
    """A rendered mosaic (uint8), its label map (codes 0..6) and the texture truth (7 = mild atypia)."""

    image: np.ndarray
    labels: np.ndarray
    texture: np.ndarray


def mosaic_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of mosaic ``index`` of a run: mosaics do not depend on how many are drawn."""
    return np.random.default_rng([int(seed), int(index)])


def phantom_params(
    *, seed: int, index: int, min_side: int, max_side: int, pixel_size_um: float = 2.0
) -> PhantomParams:
    """Width and height of mosaic ``index``, uniform in ``min_side..max_side`` px (drawn apart from its
    pixels, so the size never shifts the pattern random stream)."""
    if not 0 < min_side <= max_side:
        raise InvalidParameter(f"need 0 < min side <= max side, got {min_side} and {max_side}")
    rng = np.random.default_rng([int(seed), int(index), 1])
    width, height = (int(v) for v in rng.integers(min_side, max_side + 1, size=2))
    return PhantomParams(width=width, height=height, pixel_size_um=pixel_size_um)


def _bbox(mask: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def compose(
    rng: np.random.Generator,
    texture: np.ndarray,
    px: float,
    *,
    difficulty: Difficulty | None = None,
    hard_rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Blend every pattern's texture with soft (about 8 um) borders; each has a similar mean reflectance.

    A ``difficulty`` other than the default changes each texture (:func:`harden_texture`) with draws from
    ``hard_rng`` only, and widens the borders.
    """
    hard = None if difficulty is None or difficulty.is_default or hard_rng is None else (difficulty, hard_rng)
    border = 8.0 if hard is None else border_sigma_um(hard[0])
    tissue = np.zeros(texture.shape, dtype=np.float32)
    for code in sorted(int(c) for c in np.unique(texture) if c > 0):
        weight = blur((texture == code).astype(np.float32), border * px)
        rows, cols = _bbox(weight > 2e-3)
        tex = RENDERERS[code](rng, (rows.stop - rows.start, cols.stop - cols.start), px)
        region = texture[rows, cols] == code
        if hard is not None:
            tex = harden_texture(hard[1], tex, code, px, hard[0])
        # class means are drawn from one distribution, so brightness alone does not tell classes apart
        scale = np.clip(rng.uniform(0.18, 0.27) / max(float(tex[region].mean()), 1e-3), 0.7, 1.4)
        tissue[rows, cols] += weight[rows, cols] * np.clip(tex, 0.0, None) * scale
    return tissue


def render_phantom(
    params: PhantomParams, *, seed: int, index: int = 0, difficulty: Difficulty | None = None
) -> Phantom:
    """Render mosaic ``index`` of the run seeded ``seed``; identical inputs give identical pixels.

    ``difficulty`` (:mod:`models.phantom.difficulty`): None or the default gives today's phantoms bit for
    bit; harder settings keep the layout and the pattern draws and add their effects on top.
    """
    d = None if difficulty is None or difficulty.is_default else difficulty
    rng = mosaic_rng(seed, index)
    hard_rng = difficulty_rng(seed, index)
    shape = (params.height, params.width)
    px = params.px_per_um
    field_px = FIELD_UM * px
    layout = make_layout(rng, shape, px, field_px)
    tissue = compose(rng, layout.texture, px, difficulty=d, hard_rng=hard_rng)
    tissue *= np.exp(0.15 * smooth_field(rng, shape, rng.uniform(250.0, 500.0) * px))
    mult, add = furrows(rng, shape, px)
    tissue = tissue * mult + add
    tissue *= field_gain(rng, shape, field_px) * illumination(rng, shape, px)
    tissue = rng.uniform(0.8, 1.25) * np.power(np.clip(tissue, 0.0, None), rng.uniform(0.85, 1.15))
    if d is not None:
        tissue = harden_acquisition(hard_rng, tissue, px, d)
    # calibrated on a real tile: about 15 % fine-scale noise at 0.5 um/px, 8 % at 2 um/px
    looks = 40.0 * params.pixel_size_um / 0.5 * rng.uniform(0.5, 1.5)
    tissue *= speckle(rng, shape, looks)
    if d is not None:
        more = extra_speckle(hard_rng, shape, looks, d)
        if more is not None:
            tissue *= more
    tissue += rng.uniform(0.1, 0.18) + rng.normal(0.0, 0.006, shape).astype(np.float32)
    tissue[~layout.scanned] = rng.uniform(0.0, 0.006, int((~layout.scanned).sum()))
    image = np.clip(np.rint(tissue * 255.0), 0, 255).astype(np.uint8)
    labels = layout.labels
    if d is not None:
        labels = uncertain_labels(hard_rng, labels, layout.scanned, px, d)
    return Phantom(image=image, labels=labels, texture=layout.texture)
