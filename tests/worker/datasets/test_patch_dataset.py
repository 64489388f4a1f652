"""Mosaics cached at the processing pixel size and windows cropped from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from models.labels import ASPECIFIC
from models.training.weak_labels import PATCH
from worker.datasets.annotated import find_mosaics
from worker.datasets.patch_dataset import PatchDataset, cache_mosaics
from worker.datasets.phantom_files import write_image
from worker.datasets.table import build_table


def test_microscope_resolution_mosaics_are_read_at_2_um(tmp_path: Path) -> None:
    """0.5 um/px mosaics and full-resolution label maps (the real-data case) become 2 um/px patches."""
    side = 2800
    image = np.zeros((side, side), dtype=np.uint8)
    image[:, side // 2 :] = 200
    labels = np.zeros((side, side), dtype=np.uint8)
    labels[:, : side // 2 - 200] = 1
    labels[:, side // 2 + 200 :] = ASPECIFIC
    for i in range(3):
        write_image(tmp_path / f"m{i}.tif", image)
        write_image(tmp_path / f"m{i}_labels.png", labels)
    table = build_table(find_mosaics(tmp_path, pixel_size_um=0.5), per_class=2, seed=0)
    assert len(table) == 12 and set(table.split) == {"train", "val", "test"}
    assert table.x.max() <= side // 4 - PATCH // 2 and table.y.max() <= side // 4 - PATCH // 2
    sources = cache_mosaics(table, tmp_path / "cache")
    assert np.load(sources["m0.tif"]).shape == (side // 4, side // 4)
    data = PatchDataset(table, sources, crop=64)
    for i in range(len(data)):
        window, label = data[i]
        assert window.shape == (1, 64, 64) and window.dtype == torch.uint8
        assert int(window[0, 32, 32]) == (200 if label == 1 else 0)
