"""Synthetic RCM mosaics of pigmented lesions at the dermal-epidermal junction, with pixel label maps.

Pure array code: ``render_phantom`` returns arrays; ``worker.datasets.phantom_files`` writes them to disk.
"""

from __future__ import annotations

from models.phantom.difficulty import PRESETS, Difficulty, parse_difficulty
from models.phantom.generate import (
    FIELD_UM,
    LEAST_SIDE_UM,
    MAX_SIDE_UM,
    MIN_SIDE_UM,
    Phantom,
    PhantomParams,
    mosaic_rng,
    phantom_params,
    render_phantom,
)
from models.phantom.textures import MILD

__all__ = [
    "FIELD_UM",
    "LEAST_SIDE_UM",
    "MAX_SIDE_UM",
    "MILD",
    "MIN_SIDE_UM",
    "PRESETS",
    "Difficulty",
    "Phantom",
    "PhantomParams",
    "mosaic_rng",
    "parse_difficulty",
    "phantom_params",
    "render_phantom",
]
