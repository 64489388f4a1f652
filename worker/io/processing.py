"""The processing image: the mosaic area-averaged to the model's pixel size, in memory or memory-mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyvips

from models.errors import InvalidParameter
from worker.io.mosaic import Mosaic, decode_error


def processing_image(mosaic: Mosaic, downsample: int, *, budget_bytes: int, workdir: Path) -> np.ndarray:
    """The mosaic area-averaged by an integer factor, in memory or memory-mapped from a raw file.

    The input is first cropped to a multiple of the factor (at most factor-1 px are dropped per axis).
    """
    img = mosaic.image
    w, h = img.width // downsample, img.height // downsample
    if w < 1 or h < 1:
        raise InvalidParameter(
            f"{mosaic.source}: {img.width} x {img.height} px is smaller than downsample factor {downsample}"
        )
    if downsample > 1:
        img = img.crop(0, 0, w * downsample, h * downsample).shrink(downsample, downsample)
    try:
        if w * h <= budget_bytes:
            return np.asarray(img.numpy(), dtype=np.uint8).reshape(h, w)
        raw = workdir / "processing.u8"
        img.rawsave(str(raw))
        return np.memmap(raw, dtype=np.uint8, mode="r", shape=(h, w))
    except pyvips.Error as exc:
        raise decode_error(mosaic.source, exc) from None
