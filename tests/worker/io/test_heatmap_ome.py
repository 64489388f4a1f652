"""heatmap.ome.tif: the heat as a pyramidal OME-TIFF that tifffile (as QuPath and napari) reads as OME, with
its physical pixel size and reduced levels, full level equal to heatmap.tif."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyvips
import tifffile

from worker.io.export import write_heatmap_ome


def _heatmap_tif(tmp_path: Path, height: int = 700, width: int = 900) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(1)
    heat = rng.random((height, width)).astype(np.float32)
    path = tmp_path / "heatmap.tif"
    pyvips.Image.new_from_array(heat).tiffsave(str(path), tile=True, compression="deflate")
    return path, heat


def test_tifffile_reads_the_ome_metadata_pyramid_and_pixels(tmp_path: Path) -> None:
    source, heat = _heatmap_tif(tmp_path)
    out = tmp_path / "heatmap.ome.tif"
    write_heatmap_ome(source, out, 2.0, bigtiff=False)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        assert (pixels["PhysicalSizeX"], pixels["PhysicalSizeY"]) == (2.0, 2.0)
        assert pixels["PhysicalSizeXUnit"] == "µm" and (pixels["SizeX"], pixels["SizeY"]) == (900, 700)
        levels = tif.series[0].levels
        assert len(levels) >= 2 and levels[1].shape == (350, 450)
        assert np.array_equal(levels[0].asarray(), heat)


def test_without_a_pixel_size_the_ome_metadata_says_none(tmp_path: Path) -> None:
    source, _ = _heatmap_tif(tmp_path, 64, 64)
    out = tmp_path / "heatmap.ome.tif"
    write_heatmap_ome(source, out, None, bigtiff=False)
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and "PhysicalSizeX" not in tif.ome_metadata
