"""Writing a result: heatmap.tif and mask.tif at processing resolution, three Deep Zoom layers at the
mosaic's full resolution, regions.geojson and summary.json, all in real files under ``tmp_path``.

The heatmap is 0.1 to 0.4 noise with two blocks: 0.8 (well above the threshold) and exactly the threshold
(``heat >= threshold`` is inside), on a 600 x 400 mosaic at downsample 4 (a 150 x 100 heatmap).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import pyvips
from PIL import Image

import worker.io.export as export
from worker.engine.params import Progress
from worker.io.colormap import rgba_lut
from worker.io.export import MASK_RGBA, OVERLAP, TILE_SIZE, write_outputs, write_summary
from worker.io.mosaic import Mosaic, open_mosaic

WIDTH, HEIGHT, K = 600, 400, 4
THRESHOLD = 0.5
HOT = (slice(20, 40), slice(30, 60))  # 0.8: rows 20..39, columns 30..59 of the heatmap
EDGE = (slice(70, 80), slice(100, 120))  # exactly the threshold


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
        "heatmap.dzi",
        "heatmap.tif",
        "heatmap_files",
        "mask.dzi",
        "mask.tif",
        "mask_files",
        "mosaic.dzi",
        "mosaic_files",
        "regions.geojson",
    ]
    assert result.positive_pixels == 20 * 30 + 10 * 20
    assert result.regions == 2
    steps = ["heatmap_tif", "mask_tif", "regions", "mosaic_dzi", "heatmap_dzi", "mask_dzi"]
    assert list(result.timings) == steps and all(t >= 0 for t in result.timings.values())
    assert reports == [Progress("export", i, len(steps)) for i in range(1, len(steps) + 1)]


def test_heatmap_tif_is_the_heatmap_in_float32(tmp_path: Path, mosaic: Mosaic, heat: np.ndarray) -> None:
    write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD)
    image = pyvips.Image.new_from_file(str(tmp_path / "heatmap.tif"))
    assert (image.width, image.height, image.bands, image.format) == (150, 100, 1, "float")
    np.testing.assert_array_equal(pixels(tmp_path / "heatmap.tif"), heat)


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
    assert boxes == {
        (30.5 * K, 20.5 * K, 59.5 * K, 39.5 * K),
        (100.5 * K, 70.5 * K, 119.5 * K, 79.5 * K),
    }


def test_the_three_deep_zoom_layers_have_the_mosaic_full_resolution_geometry(
    tmp_path: Path, mosaic: Mosaic, heat: np.ndarray
) -> None:
    write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD)
    top = math.ceil(math.log2(max(WIDTH, HEIGHT)))  # levels down to one pixel: 0 .. 10
    columns, rows = math.ceil(WIDTH / TILE_SIZE), math.ceil(HEIGHT / TILE_SIZE)
    for layer, fmt in (("mosaic", "jpg"), ("heatmap", "png"), ("mask", "png")):
        assert dzi_size(tmp_path / f"{layer}.dzi") == {
            "xmlns": "http://schemas.microsoft.com/deepzoom/2008",
            "Format": fmt,
            "Overlap": str(OVERLAP),
            "TileSize": str(TILE_SIZE),
            "Width": str(WIDTH),
            "Height": str(HEIGHT),
        }
        files = tmp_path / f"{layer}_files"
        assert sorted(int(p.name) for p in files.iterdir() if p.is_dir()) == list(range(top + 1))
        assert [p.name for p in files.iterdir() if not p.is_dir()] == ["vips-properties.xml"]  # libvips'
        assert sorted(p.name for p in (files / str(top)).iterdir()) == sorted(
            f"{c}_{r}.{fmt}" for c in range(columns) for r in range(rows)
        )
        assert [p.name for p in (files / "0").iterdir()] == [f"0_0.{fmt}"]
        # Tiles carry one pixel of overlap on each inner side: the last column is 600 - 2 x 254 + 1 wide.
        first = Image.open(files / str(top) / f"0_0.{fmt}")
        last = Image.open(files / str(top) / f"{columns - 1}_{rows - 1}.{fmt}")
        assert first.size == (TILE_SIZE + OVERLAP, TILE_SIZE + OVERLAP)
        assert last.size == (
            WIDTH - (columns - 1) * TILE_SIZE + OVERLAP,
            HEIGHT - (rows - 1) * TILE_SIZE + OVERLAP,
        )


def full_resolution(tmp_path: Path, layer: str) -> np.ndarray:
    """The top level of a PNG layer joined back into one RGBA image (tiles without their overlap)."""
    level = tmp_path / f"{layer}_files" / str(math.ceil(math.log2(max(WIDTH, HEIGHT))))
    whole = np.zeros((HEIGHT, WIDTH, 4), np.uint8)
    for tile in level.iterdir():
        c, r = (int(v) for v in tile.stem.split("_"))
        pixels = np.asarray(Image.open(tile).convert("RGBA"))
        y0, x0 = r * TILE_SIZE - (OVERLAP if r else 0), c * TILE_SIZE - (OVERLAP if c else 0)
        whole[y0 : y0 + pixels.shape[0], x0 : x0 + pixels.shape[1]] = pixels
    return whole


def test_the_mask_layer_is_the_mask_tif_zoomed_by_the_factor(
    tmp_path: Path, mosaic: Mosaic, heat: np.ndarray
) -> None:
    write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD)
    overlay = full_resolution(tmp_path, "mask")
    inside = np.kron(heat >= THRESHOLD, np.ones((K, K), bool))
    np.testing.assert_array_equal(overlay[inside], np.broadcast_to(MASK_RGBA, (int(inside.sum()), 4)))
    np.testing.assert_array_equal(overlay[~inside][:, 3], 0)


def test_the_heatmap_layer_colours_the_heat_through_the_lookup_table(
    tmp_path: Path, mosaic: Mosaic, heat: np.ndarray
) -> None:
    write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD)
    coloured = full_resolution(tmp_path, "heatmap")
    lut = rgba_lut()
    # Inside a block (away from its edge, where the linear upsampling blends) the colour is lut[round(255 h)].
    np.testing.assert_array_equal(coloured[100:140, 140:220], np.broadcast_to(lut[204], (40, 80, 4)))
    np.testing.assert_array_equal(coloured[290:310, 410:470], np.broadcast_to(lut[128], (20, 60, 4)))


def test_the_mosaic_layer_keeps_the_mosaic(tmp_path: Path, mosaic: Mosaic, heat: np.ndarray) -> None:
    write_outputs(tmp_path, heat=heat, mosaic=mosaic, downsample=K, threshold=THRESHOLD)
    tile = np.asarray(Image.open(tmp_path / "mosaic_files" / "10" / "0_0.jpg").convert("L"), dtype=float)
    original = np.asarray(mosaic.image.numpy(), dtype=float)[: tile.shape[0], : tile.shape[1]]
    assert np.abs(tile - original).mean() < 2.0  # JPEG at quality 85


def test_a_mosaic_not_divisible_by_the_factor_keeps_its_full_size(tmp_path: Path, heat: np.ndarray) -> None:
    Image.fromarray(np.full((HEIGHT + 3, WIDTH + 2), 90, np.uint8)).save(tmp_path / "odd.png")
    odd = open_mosaic(tmp_path / "odd.png", max_pixels=1 << 30)
    write_outputs(tmp_path, heat=heat, mosaic=odd, downsample=K, threshold=THRESHOLD)
    for layer in ("mosaic", "heatmap", "mask"):
        size = dzi_size(tmp_path / f"{layer}.dzi")
        assert (size["Width"], size["Height"]) == (str(WIDTH + 2), str(HEIGHT + 3))
    corner = np.asarray(Image.open(tmp_path / "mask_files" / "10" / "2_1.png").convert("RGBA"))
    assert corner.shape[:2] == (HEIGHT + 3 - TILE_SIZE + OVERLAP, WIDTH + 2 - 2 * TILE_SIZE + OVERLAP)
    assert (corner[-3:, :, 3] == 0).all() and (corner[:, -2:, 3] == 0).all()  # past the heatmap: no mask


def test_write_summary_writes_indented_json(tmp_path: Path) -> None:
    summary = {"windows": {"computed": 12}, "threshold": 0.5, "notes": ["a"]}
    write_summary(tmp_path, summary)
    text = (tmp_path / "summary.json").read_text(encoding="utf-8")
    assert json.loads(text) == summary
    assert text == json.dumps(summary, indent=2) + "\n"
