"""The mosaic's own pyramid: JPEG tiles of the mosaic, renamed into place whole, built once even when two
builders race for it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worker.io.mosaic import Mosaic, open_mosaic
from worker.io.pyramid import build_mosaic_pyramid, pyramid_ready


@pytest.fixture
def mosaic(tmp_path: Path) -> Mosaic:
    yy, xx = np.mgrid[0:400, 0:600]
    pixels = (128 + 60 * np.sin(xx / 40.0) * np.cos(yy / 30.0)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "mosaic.png")
    return open_mosaic(tmp_path / "mosaic.png", max_pixels=1 << 30)


def test_the_pyramid_keeps_the_mosaic(tmp_path: Path, mosaic: Mosaic) -> None:
    folder = tmp_path / "m" / "pyramid"
    assert not pyramid_ready(folder)
    seconds = build_mosaic_pyramid(mosaic, folder)
    assert seconds is not None and seconds >= 0 and pyramid_ready(folder)
    assert (
        'Width="600"' in (folder / "mosaic.dzi").read_text()
        and 'Format="jpeg"' in (folder / "mosaic.dzi").read_text()
    )
    tile = np.asarray(Image.open(folder / "mosaic_files" / "10" / "0_0.jpeg").convert("L"), dtype=float)
    original = np.asarray(mosaic.image.numpy(), dtype=float)[: tile.shape[0], : tile.shape[1]]
    assert np.abs(tile - original).mean() < 2.5  # JPEG at quality 75
    assert sorted(p.name for p in folder.parent.iterdir()) == [".pyramid.lock", "pyramid"]  # no leftovers


def test_a_ready_pyramid_is_not_built_again(tmp_path: Path, mosaic: Mosaic) -> None:
    folder = tmp_path / "pyramid"
    build_mosaic_pyramid(mosaic, folder)
    before = (folder / "mosaic.dzi").stat().st_mtime_ns
    assert build_mosaic_pyramid(mosaic, folder) is None
    assert (folder / "mosaic.dzi").stat().st_mtime_ns == before


def test_two_builders_at_once_build_it_once(tmp_path: Path, mosaic: Mosaic) -> None:
    folder = tmp_path / "pyramid"
    results: list[float | None] = []
    threads = [
        threading.Thread(target=lambda: results.append(build_mosaic_pyramid(mosaic, folder)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=lambda r: r is None)[1] is None and sum(r is not None for r in results) == 1
    assert pyramid_ready(folder)
