"""A TIFF cut short is reported as damaged or truncated, like a PNG cut short, whatever its layout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import pyvips
from PIL import Image

from worker.errors import UnreadableMosaic
from worker.io.mosaic import verify_readable

LIMIT = 10**8


def noise() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (400, 400), np.uint8)


def vips_tiff(path: Path, **save: object) -> Path:
    """libvips writes the pixels first and the image directory last."""
    pyvips.Image.new_from_array(noise()).tiffsave(str(path), **save)
    return path


def pillow_tiff(path: Path) -> Path:
    """Pillow writes the image directory before the pixels."""
    Image.fromarray(noise()).save(path, format="TIFF")
    return path


@pytest.mark.parametrize(
    ("layout", "write"),
    [
        ("striped, directory last", vips_tiff),
        ("tiled, directory last", lambda p: vips_tiff(p, tile=True, tile_width=64, tile_height=64)),
        ("striped, directory first", pillow_tiff),
    ],
)
@pytest.mark.parametrize("kept", [0.1, 0.5, 0.9])
def test_a_truncated_tiff_says_damaged_or_truncated(
    tmp_path: Path, layout: str, write: Callable[[Path], Path], kept: float
) -> None:
    whole = write(tmp_path / "whole.tif")
    cut = tmp_path / "cut.tif"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * kept)])
    with pytest.raises(UnreadableMosaic, match="damaged or truncated") as info:
        verify_readable(cut, max_pixels=LIMIT)
    assert str(cut) in str(info.value), layout


def test_a_text_file_named_tif_is_still_not_an_image(tmp_path: Path) -> None:
    text = tmp_path / "notes.tif"
    text.write_text("II* but not really a TIFF\n")
    with pytest.raises(UnreadableMosaic, match="not an image"):
        verify_readable(text, max_pixels=LIMIT)
