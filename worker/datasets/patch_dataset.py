"""Patches for training and the patch-level test: mosaics cached once as ``.npy``, windows cropped on the fly.

Each mosaic of a patch table is decoded once, at the processing pixel size, into a raw ``.npy`` cache;
``PatchDataset`` memory-maps those and crops windows on the fly, each DataLoader worker opening the mosaics
itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from models.errors import InvalidParameter
from models.labels import ASPECIFIC
from models.training.augment import random_offset
from models.training.weak_labels import PATCH
from worker.datasets.annotated import MAX_PIXELS
from worker.datasets.table import PatchTable
from worker.io.mosaic import open_mosaic


def _cache_name(image: Path, downsample: int) -> str:
    st = image.stat()
    key = f"{image.resolve()}|{st.st_size}|{st.st_mtime_ns}|{downsample}".encode()
    return f"{image.stem}-{hashlib.sha256(key).hexdigest()[:12]}.npy"


def cache_mosaics(
    table: PatchTable, cache_dir: Path, *, on_mosaic: Callable[[str], None] | None = None
) -> dict[str, Path]:
    """Decode each mosaic of the table once at the processing pixel size into ``cache_dir/*.npy``."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(table.meta["mosaics_dir"])
    out: dict[str, Path] = {}
    for name in sorted(set(table.mosaic)):
        info = table.meta["mosaics"][name]
        k = max(1, round(table.meta["processing_pixel_size_um"] / float(info["pixel_size_um"])))
        image = folder / name
        target = cache_dir / _cache_name(image, k)
        if not target.is_file():
            img = open_mosaic(image, max_pixels=MAX_PIXELS).image
            if k > 1:
                img = img.crop(0, 0, (img.width // k) * k, (img.height // k) * k).shrink(k, k)
            tmp = target.with_suffix(".tmp.npy")
            np.save(tmp, np.ascontiguousarray(img.numpy(), dtype=np.uint8))
            os.replace(tmp, target)
        out[name] = target
        if on_mosaic is not None:
            on_mosaic(name)
    return out


class PatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``crop`` x ``crop`` uint8 windows of the patches: random inside the 500 px patch when training,
    centred otherwise. Memory maps are opened lazily in whichever process reads, so DataLoader workers
    open the mosaics themselves."""

    def __init__(
        self, table: PatchTable, sources: dict[str, Path], *, crop: int = 256, random_crop: bool = False
    ) -> None:
        patch = int(table.meta.get("patch", PATCH))
        if not 1 <= crop <= patch:
            raise InvalidParameter(f"crop must be in 1..{patch}, got {crop}")
        self.table, self.sources, self.crop, self.patch = table, sources, crop, patch
        self.random_crop = random_crop
        self._open: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.table)

    def _mosaic(self, name: str) -> np.ndarray:
        arr = self._open.get(name)
        if arr is None:
            arr = np.load(self.sources[name], mmap_mode="r")
            self._open[name] = arr
        return arr

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        mosaic = self._mosaic(self.table.mosaic[i])
        if self.random_crop:
            oy, ox = random_offset(self.patch, self.crop)
        else:
            oy = ox = (self.patch - self.crop) // 2
        y0 = int(self.table.y[i]) - self.patch // 2 + oy
        x0 = int(self.table.x[i]) - self.patch // 2 + ox
        window = np.array(mosaic[y0 : y0 + self.crop, x0 : x0 + self.crop], dtype=np.uint8)
        if window.shape != (self.crop, self.crop):
            raise InvalidParameter(f"patch {i} at ({x0}, {y0}) leaves mosaic {self.table.mosaic[i]}")
        label = torch.tensor(float(self.table.code[i] == ASPECIFIC))
        return torch.from_numpy(window).unsqueeze(0), label
