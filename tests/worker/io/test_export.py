"""Writing a result, all at processing resolution: heatmap.tif and mask.tif (with their pixel size), the heat
as an 8-bit grey Deep Zoom pyramid, regions.geojson, the heat histogram and summary.json, in real files under
``tmp_path``. The mosaic's own pyramid is not part of a result (``test_pyramid.py``).

The heatmap is 0.1 to 0.4 noise with two blocks: 0.8 (well above the threshold) and exactly the threshold
(``heat >= threshold`` is inside), on a 600 x 400 mosaic at downsample 4 (a 150 x 100 heatmap).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips
from PIL import Image

import worker.io.export as export
from worker.io.export import HISTOGRAM_BINS, heat_histogram, write_outputs, write_summary
from worker.io.mosaic import Mosaic, open_mosaic
from worker.progress import Progress

WIDTH, HEIGHT, K = 600, 400, 4
THRESHOLD = 0.5
HOT = (slice(20, 40), slice(30, 60))  # 0.8: rows 20..39, columns 30..59 of the heatmap
EDGE = (slice(70, 80), slice(100, 120))  # exactly the threshold
TILE_SIZE, OVERLAP = export.TILE_SIZE, export.OVERLAP


@pytest.fixture
def mosaic(tmp_path: Path) -> Mosaic:
    """A 600 x 400 8-bit mosaic with a smooth pattern (so JPEG tiles stay close to it)."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    pixels = (128 + 60 * np.sin(xx / 40.0) * np.cos(yy / 30.0)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "mosaic.png")
    return open_mosaic(tmp_path / "mosaic.png", max_pixels=1 << 30)


@pytest.fixture
def heat() -> np.ndarray:
    rng = np.random.default_rng(0)
    values = rng.uniform(0.1, 0.4, (HEIGHT // K, WIDTH // K)).astype(np.float32)
    values[HOT] = 0.8
    values[EDGE] = THRESHOLD
    return values


def pixels(path: Path) -> np.ndarray:
    return np.asarray(pyvips.Image.new_from_file(str(path)).numpy())


def dzi_size(path: Path) -> dict[str, str]:
    """The attributes of a .dzi file's Image and Size elements."""
    text = path.read_text(encoding="utf-8")
    image = re.search(r"<Image ([^>]*)>", text)
    size = re.search(r"<Size ([^>]*)/>", text)
    assert image and size, text
    return dict(re.findall(r'(\w+)="([^"]*)"', image.group(1) + " " + size.group(1)))


def test_the_output_folder_holds_every_result(tmp_path: Path, mosaic: Mosaic, heat: np.ndarray) -> None:
    out = tmp_path / "out"
    out.mkdir()
    reports: list[Progress] = []
    result = write_outputs(
        out, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD, progress=reports.append
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "heat.dzi",
        "heat_files",
        "heat_histogram.json",
        "heatmap.ome.tif",
        "heatmap.tif",
        "mask.tif",
        "regions.geojson",
    ]
    assert result.positive_pixels == 20 * 30 + 10 * 20
    assert result.regions == 2
    steps = ["heatmap_tif", "heat_pass", "mask_tif", "regions", "heat_dzi", "histogram", "heatmap_ome_tif"]
    assert list(result.timings) == steps and all(t >= 0 for t in result.timings.values())
    assert reports == [Progress("export", i, len(steps)) for i in range(1, len(steps) + 1)]


def test_the_layers_are_listed_with_their_sizes(tmp_path: Path, mosaic: Mosaic, heat: np.ndarray) -> None:
    layers = write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD).layers
    tiles = {"tile_size": TILE_SIZE, "overlap": OVERLAP}
    assert layers == {
        "mosaic": {"width": WIDTH, "height": HEIGHT, "format": "jpeg", "scale": 1, **tiles},
        "heat": {"width": 150, "height": 100, "format": "png", "scale": K, "bits": 8, **tiles},
        "heatmap": {
            "width": 150,
            "height": 100,
            "format": "png",
            "scale": K,
            "rendered_from": "heat",
            **tiles,
        },
        "mask": {"width": 150, "height": 100, "format": "png", "scale": K, "rendered_from": "heat", **tiles},
        "heatmap_ome": {
            "file": "heatmap.ome.tif",
            "width": 150,
            "height": 100,
            "format": "ome-tiff",
            "scale": K,
        },
    }


def test_heatmap_tif_is_the_heatmap_in_float32(tmp_path: Path, mosaic: Mosaic, heat: np.ndarray) -> None:
    write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD)
    image = pyvips.Image.new_from_file(str(tmp_path / "heatmap.tif"))
    assert (image.width, image.height, image.bands, image.format) == (150, 100, 1, "float")
    np.testing.assert_array_equal(pixels(tmp_path / "heatmap.tif"), heat)


def tiff_tags(path: Path) -> dict[int, Any]:
    with Image.open(path) as tiff:
        return dict(tiff.tag_v2)  # type: ignore[attr-defined]


def test_both_tiffs_record_the_processing_pixel_size(
    tmp_path: Path, mosaic: Mosaic, heat: np.ndarray
) -> None:
    write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD, pixel_size_um=2.0)
    for name in ("heatmap.tif", "mask.tif"):
        tags = tiff_tags(tmp_path / name)
        # XResolution (282), YResolution (283): 5000 px per centimetre (ResolutionUnit 296 = 3) is 2 um/px.
        assert (float(tags[282]), float(tags[283]), tags[296]) == (5000.0, 5000.0, 3), name
        image = pyvips.Image.new_from_file(str(tmp_path / name))
        assert image.xres == pytest.approx(1000 / 2.0) and image.yres == pytest.approx(1000 / 2.0)


def test_without_a_pixel_size_the_tiffs_carry_libvips_placeholder(
    tmp_path: Path, mosaic: Mosaic, heat: np.ndarray
) -> None:
    write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD)
    tags = tiff_tags(tmp_path / "heatmap.tif")
    assert (round(float(tags[282]), 1), tags[296]) == (25.4, 2)  # 1 px/mm as 25.4 per inch: no pixel size


def test_a_non_positive_pixel_size_is_refused(tmp_path: Path, mosaic: Mosaic, heat: np.ndarray) -> None:
    with pytest.raises(ValueError, match="pixel_size_um must be > 0"):
        write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD, pixel_size_um=0)


def test_a_disk_backed_heatmap_is_written_chunk_by_chunk_with_its_values(
    tmp_path: Path, mosaic: Mosaic, heat: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "CHUNK_ROWS", 32)  # 100 rows: three full chunks and a short one
    work = tmp_path / "work"
    work.mkdir()
    mapped = np.memmap(work / "heat.f32", dtype=np.float32, mode="w+", shape=heat.shape)
    mapped[:] = heat
    mapped.flush()
    out = tmp_path / "out"
    out.mkdir()
    write_outputs(out, heat=mapped, mosaic=mosaic, downsample=K, threshold=THRESHOLD)
    np.testing.assert_array_equal(pixels(out / "heatmap.tif"), heat)
    np.testing.assert_array_equal(pixels(out / "mask.tif"), np.where(heat >= THRESHOLD, 255, 0))
    assert json.loads((out / "heat_histogram.json").read_text())["counts"] == heat_histogram(heat)


def test_mask_tif_is_heat_at_or_above_the_threshold(tmp_path: Path, mosaic: Mosaic, heat: np.ndarray) -> None:
    write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD)
    image = pyvips.Image.new_from_file(str(tmp_path / "mask.tif"))
    assert (image.width, image.height, image.bands, image.format) == (150, 100, 1, "uchar")
    mask = pixels(tmp_path / "mask.tif")
    np.testing.assert_array_equal(mask, np.where(heat >= THRESHOLD, 255, 0))
    assert (mask[EDGE] == 255).all()  # equal to the threshold is inside


def test_regions_geojson_outlines_both_blocks_at_full_resolution(
    tmp_path: Path, mosaic: Mosaic, heat: np.ndarray
) -> None:
    write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD)
    collection = json.loads((tmp_path / "regions.geojson").read_text(encoding="utf-8"))
    boxes = set()
    for feature in collection["features"]:
        [ring] = feature["geometry"]["coordinates"]
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        boxes.add((min(xs), min(ys), max(xs), max(ys)))
    assert boxes == {  # pixel edges: columns 30..59 span x 30 to 60, and so on
        (30 * K, 20 * K, 60 * K, 40 * K),
        (100 * K, 70 * K, 120 * K, 80 * K),
    }


def test_the_histogram_gives_the_area_at_every_threshold_of_its_grid(
    tmp_path: Path, mosaic: Mosaic, heat: np.ndarray
) -> None:
    write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD)
    histogram = json.loads((tmp_path / "heat_histogram.json").read_text(encoding="utf-8"))
    counts = histogram["counts"]
    assert histogram["bins"] == HISTOGRAM_BINS == len(counts) and sum(counts) == heat.size
    for k in (0, 100, 250, 399, 400, 500, 799, 800, 801, 999):
        assert sum(counts[k:]) == int(np.count_nonzero(heat >= np.float32(k / HISTOGRAM_BINS))), k


def test_heat_one_falls_in_the_last_bin() -> None:
    counts = heat_histogram(np.array([[0.0, 0.9995, 1.0]], np.float32), bins=1000)
    assert counts[0] == 1 and counts[999] == 2 and sum(counts) == 3


def test_the_heat_pyramid_is_the_heat_in_grey_at_processing_resolution(
    tmp_path: Path, mosaic: Mosaic, heat: np.ndarray
) -> None:
    write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD)
    w, h = 150, 100
    top = math.ceil(math.log2(max(w, h)))  # levels down to one pixel: 0 .. 8
    assert dzi_size(tmp_path / "heat.dzi") == {
        "xmlns": "http://schemas.microsoft.com/deepzoom/2008",
        "Format": "png",
        "Overlap": str(OVERLAP),
        "TileSize": str(TILE_SIZE),
        "Width": str(w),
        "Height": str(h),
    }
    files = tmp_path / "heat_files"
    assert sorted(int(p.name) for p in files.iterdir() if p.is_dir()) == list(range(top + 1))
    [tile] = (files / str(top)).iterdir()
    grey = Image.open(tile)
    assert (grey.mode, grey.size) == ("L", (w, h))
    np.testing.assert_array_equal(np.asarray(grey), np.rint(heat * 255).astype(np.uint8))


def test_a_mosaic_not_divisible_by_the_factor_lists_its_full_size(tmp_path: Path, heat: np.ndarray) -> None:
    Image.fromarray(np.full((HEIGHT + 3, WIDTH + 2), 90, np.uint8)).save(tmp_path / "odd.png")
    odd = open_mosaic(tmp_path / "odd.png", max_pixels=1 << 30)
    layers = write_outputs(tmp_path, heat=heat, mosaic=odd, downsample=K, threshold=THRESHOLD).layers
    assert (layers["mosaic"]["width"], layers["mosaic"]["height"]) == (WIDTH + 2, HEIGHT + 3)
    # The heat covers 150 x 4 = 600 of the 602 columns: the viewer draws it 600 / 602 of the mosaic wide.
    assert layers["heat"]["width"] * layers["heat"]["scale"] == WIDTH


def test_write_summary_writes_indented_json(tmp_path: Path) -> None:
    summary = {"windows": {"computed": 12}, "threshold": 0.5, "notes": ["a"]}
    write_summary(tmp_path, summary)
    text = (tmp_path / "summary.json").read_text(encoding="utf-8")
    assert json.loads(text) == summary
    assert text == json.dumps(summary, indent=2) + "\n"


def test_the_umask_is_read_without_being_changed() -> None:
    from worker.io.files import current_umask

    before = os.umask(0o027)
    try:
        assert current_umask() == 0o027
        assert os.umask(0o027) == 0o027  # still what was set: reading it changed nothing
    finally:
        os.umask(before)
