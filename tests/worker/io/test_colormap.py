"""The stored colour tables are matplotlib's (the API colours tiles without matplotlib)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps

from worker.io.colormap import alpha_ramp, colormap_names, rgb_lut, rgba_lut


@pytest.mark.parametrize("name", colormap_names())
def test_each_stored_table_is_matplotlibs(name: str) -> None:
    expected = np.rint(colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    np.testing.assert_array_equal(rgb_lut(name), expected)


def test_the_default_table_fades_to_transparent_below_its_value() -> None:
    lut = rgba_lut()
    assert lut.shape == (256, 4) and lut.dtype == np.uint8
    assert lut[0, 3] == 0 and lut[19, 3] < 255 and (lut[39:, 3] == 255).all()  # 0.15 * 255 = 38.25
    assert (alpha_ramp(0.0) == 255).all()


def test_unknown_names_and_fades_are_refused() -> None:
    with pytest.raises(ValueError, match="colormap must be one of inferno"):
        rgb_lut("jet")
    with pytest.raises(ValueError, match=r"transparent_below must be in 0\.\.1"):
        alpha_ramp(2.0)
