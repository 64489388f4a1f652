"""Writing a result to a full disk (a small tmpfs): the failure names the lack of space, not libvips'
"Unknown error -1", and holds no server path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import pyvips
from PIL import Image

from worker.errors import ExportFailed
from worker.io.export import write_outputs
from worker.io.mosaic import open_mosaic

MIB = 1024**2


def test_an_export_to_a_full_disk_says_so(small_disk: Callable[[int], Path], tmp_path: Path) -> None:
    size = 1200
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(1, 255, (size, size), dtype=np.uint8)).save(tmp_path / "m.png")
    out = small_disk(2 * MIB) / "result"
    out.mkdir()
    heat = rng.random((size, size), dtype=np.float32)  # 5.5 MiB of float32: cannot fit
    with pytest.raises((pyvips.Error, OSError)) as raised:
        write_outputs(
            out,
            heat=heat,
            mosaic=open_mosaic(tmp_path / "m.png", max_pixels=1 << 30),
            downsample=1,
            threshold=0.5,
        )
    error = ExportFailed.because(raised.value)
    assert error.code == "export_failed"
    assert str(error).startswith("writing the results failed: not enough space in the data folder")
    assert "Unknown error" not in str(error) and str(out) not in str(error) and "/" not in str(error)
