"""Heat tiles coloured on request: an 8-bit grey PNG re-labelled as a palette PNG decodes to exactly the
lookup table applied to its grey values, for the heatmap and for the mask at any threshold; and the geometry
checks that name the level, column or row a pyramid lacks."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image

from worker.io.colormap import rgba_lut
from worker.io.tiles import (
    MASK_RGBA,
    DziGeometry,
    OutsidePyramid,
    heat_tile,
    mask_rgba,
    mask_tile,
    palette_png,
    threshold_level,
)


def grey_png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG", compress_level=1)
    return out.getvalue()


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGBA"))


@pytest.fixture
def grey() -> np.ndarray:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 256, (61, 97), dtype=np.uint8)
    values[0, :4] = [0, 127, 128, 255]
    return values


@pytest.mark.parametrize(("name", "fade"), [("inferno", 0.15), ("viridis", 0.0), ("gray", 1.0)])
def test_a_heat_tile_is_the_lookup_table_of_its_grey_values(grey: np.ndarray, name: str, fade: float) -> None:
    coloured = heat_tile(grey_png(grey), colormap=name, transparent_below=fade)
    np.testing.assert_array_equal(decode(coloured), rgba_lut(name, fade)[grey])


@pytest.mark.parametrize("threshold", [0.0, 0.2, 0.5, 0.5 + 1e-9, 127 / 255, 1.0])
def test_a_mask_tile_shows_grey_values_at_or_above_the_threshold(grey: np.ndarray, threshold: float) -> None:
    rgba = decode(mask_tile(grey_png(grey), threshold=threshold))
    inside = grey / 255 >= threshold - 1e-12
    np.testing.assert_array_equal(rgba[inside], np.broadcast_to(MASK_RGBA, (int(inside.sum()), 4)))
    assert (rgba[~inside][:, 3] == 0).all()


def test_threshold_levels_sit_on_the_grey_grid() -> None:
    assert [threshold_level(t) for t in (0.0, 0.2, 0.5, 1.0, 51 / 255)] == [0, 51, 128, 255, 51]
    with pytest.raises(ValueError, match=r"threshold must be in 0\.\.1, got 1\.5"):
        threshold_level(1.5)
    assert (mask_rgba(0.5)[:128, 3] == 0).all() and (mask_rgba(0.5)[128:, 3] == 255).all()


def test_the_pixel_data_is_copied_not_recompressed(grey: np.ndarray) -> None:
    source = grey_png(grey)
    coloured = palette_png(source, rgba_lut())
    assert source[source.index(b"IDAT") - 4 : source.index(b"IEND") - 4] in coloured


def test_only_8_bit_grey_pngs_are_coloured(grey: np.ndarray) -> None:
    rgb = io.BytesIO()
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(rgb, format="PNG")
    with pytest.raises(ValueError, match="8-bit grey"):
        palette_png(rgb.getvalue(), rgba_lut())
    with pytest.raises(ValueError, match="not a PNG"):
        palette_png(b"GIF89a", rgba_lut())


def test_the_geometry_names_what_is_outside_the_pyramid() -> None:
    geometry = DziGeometry(width=600, height=300, tile_size=254, overlap=1, format="png")
    assert geometry.max_level == math.ceil(math.log2(600)) == 10
    assert geometry.level_size(10) == (600, 300) and geometry.level_size(9) == (300, 150)
    geometry.check_tile(10, 2, 1)
    geometry.check_tile(0, 0, 0)
    for args, field in (
        ((11, 0, 0), "level"),
        ((-1, 0, 0), "level"),
        ((10, 3, 0), "col"),
        ((10, 0, 2), "row"),
    ):
        with pytest.raises(OutsidePyramid) as info:
            geometry.check_tile(*args)
        assert info.value.field == field and str(info.value).startswith(f"{field}: ")
