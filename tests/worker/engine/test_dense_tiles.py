"""Dense mode's tiles: the halo keeps tile seams out of the features, and the image edge needs none."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from worker.engine.dense_tiles import STRIDE, DenseOptions, cam_grid
from worker.io.checkpoint import load_model


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 255, size=(STRIDE * 10, STRIDE * 13), dtype=np.uint8)


def _grid(image: np.ndarray, model_dir: Path, **options: int) -> torch.Tensor:
    model = load_model(model_dir)
    return cam_grid(image, model, dtype=torch.float32, options=DenseOptions(**options))


def test_tiles_with_a_wide_halo_equal_one_pass(image: np.ndarray, tiny_model_dir: Path) -> None:
    whole = _grid(image, tiny_model_dir, tile_cells=100, halo_cells=0)
    tiled = _grid(image, tiny_model_dir, tile_cells=3, halo_cells=8)
    assert whole.shape == tiled.shape == (10, 13)
    scale = float(whole.abs().max())
    assert float((whole - tiled).abs().max()) < 1e-4 * scale


def test_tiles_without_a_halo_show_their_seams(image: np.ndarray, tiny_model_dir: Path) -> None:
    whole = _grid(image, tiny_model_dir, tile_cells=100, halo_cells=0)
    seams = _grid(image, tiny_model_dir, tile_cells=3, halo_cells=0)
    assert float((whole - seams).abs().max()) > 1e-3 * float(whole.abs().max())
