"""Writing a segmentation result: TIFFs at processing resolution, Deep Zoom layers at full resolution.

All three DZI layers share the input's full-resolution geometry so a viewer overlays them one to one:
``mosaic`` (JPEG tiles), ``heatmap`` (PNG RGBA through the colormap) and ``mask`` (PNG RGBA, shrunk by mode
so it stays binary), all with 254 px tiles and 1 px overlap.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

from worker.contract import HEATMAP_TIFF, MASK_TIFF, REGIONS_GEOJSON, SUMMARY_FILE
from worker.engine.params import Progress, ProgressFn
from worker.io.colormap import rgba_lut
from worker.io.mosaic import Mosaic
from worker.io.regions import regions_geojson

TILE_SIZE = 254
OVERLAP = 1
MASK_RGBA = [0, 229, 255, 255]


@dataclass
class ExportResult:
    """What export measured: positive pixel count, number of regions and seconds per step."""

    positive_pixels: int
    regions: int
    timings: dict[str, float] = field(default_factory=dict)


CHUNK_ROWS = 1024


def _heat_image(heat: np.ndarray) -> pyvips.Image:
    """A pyvips image of the heatmap.

    A disk-backed heatmap (raw float32 file) is cut into row chunks, each mapped, saved as a tiled TIFF
    beside the raw file and unmapped again, then joined: so no more than one chunk of it is ever resident,
    whatever the mosaic size.
    """
    h, w = heat.shape
    if not (isinstance(heat, np.memmap) and heat.filename is not None and heat.offset == 0):
        return pyvips.Image.new_from_memory(np.ascontiguousarray(heat).data, w, h, 1, "float")
    raw = Path(heat.filename)
    chunks = []
    for y in range(0, h, CHUNK_ROWS):
        rows = min(CHUNK_ROWS, h - y)
        part = pyvips.Image.rawload(str(raw), w, rows, 1, offset=y * w * 4, format="float")
        path = raw.with_name(f"{raw.stem}-{y:06d}.tif")
        part.tiffsave(str(path), tile=True, compression="none")
        chunks.append(pyvips.Image.new_from_file(str(path)))
    return pyvips.Image.arrayjoin(chunks, across=1).crop(0, 0, w, h)  # arrayjoin pads cells to one size


def _to_full_resolution(
    img: pyvips.Image, downsample: int, width: int, height: int, *, smooth: bool
) -> pyvips.Image:
    if downsample > 1:
        img = img.resize(downsample, kernel="linear") if smooth else img.zoom(downsample, downsample)
    return img.embed(0, 0, width, height, extend="black").crop(0, 0, width, height)


def _dzsave(img: pyvips.Image, base: Path, suffix: str, **kwargs: Any) -> None:
    img.dzsave(str(base), tile_size=TILE_SIZE, overlap=OVERLAP, suffix=suffix, depth="onepixel", **kwargs)


TIFF_OPTIONS: dict[str, Any] = {"tile": True, "tile_width": 256, "tile_height": 256, "compression": "deflate"}


def _bigtiff(heat: np.ndarray) -> bool:
    return heat.size * 4 > 3 * 1024**3


def _heat_layer(out: Path, mosaic: Mosaic, downsample: int) -> None:
    lut_np = rgba_lut()
    lut = pyvips.Image.new_from_memory(lut_np.tobytes(), 256, 1, 4, "uchar")
    # The pyramids read the TIFFs just written (tiled, decoded on demand), never the whole heatmap at once.
    heat_img = pyvips.Image.new_from_file(str(out / HEATMAP_TIFF))
    width, height = mosaic.header.width, mosaic.header.height
    full_heat = _to_full_resolution(heat_img, downsample, width, height, smooth=True)
    colored = (full_heat * 255).rint().cast("uchar").maplut(lut).copy(interpretation="srgb")
    _dzsave(colored, out / "heatmap", ".png")


def _mask_layer(out: Path, mosaic: Mosaic, downsample: int) -> None:
    mask_img = pyvips.Image.new_from_file(str(out / MASK_TIFF))
    width, height = mosaic.header.width, mosaic.header.height
    full_mask = _to_full_resolution(mask_img, downsample, width, height, smooth=False)
    overlay = (full_mask > 0).ifthenelse(MASK_RGBA, [0, 0, 0, 0]).copy(interpretation="srgb")
    _dzsave(overlay, out / "mask", ".png", region_shrink="mode")


def write_outputs(
    out: Path,
    *,
    heat: np.ndarray,
    mosaic: Mosaic,
    downsample: int,
    threshold: float,
    progress: ProgressFn | None = None,
) -> ExportResult:
    """Write heatmap.tif, mask.tif, the three DZI layers and regions.geojson into ``out``."""
    steps = ["heatmap_tif", "mask_tif", "regions", "mosaic_dzi", "heatmap_dzi", "mask_dzi"]
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    def tick(name: str) -> None:
        nonlocal t0
        timings[name] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if progress is not None:
            progress(Progress("export", len(timings), len(steps)))

    heat_img = _heat_image(heat)
    heat_img.tiffsave(str(out / HEATMAP_TIFF), predictor="float", bigtiff=_bigtiff(heat), **TIFF_OPTIONS)
    tick("heatmap_tif")
    (heat_img >= threshold).tiffsave(str(out / MASK_TIFF), bigtiff=_bigtiff(heat), **TIFF_OPTIONS)
    mask = np.asarray(pyvips.Image.new_from_file(str(out / MASK_TIFF)).numpy())
    positive = int(np.count_nonzero(mask))
    tick("mask_tif")
    geojson = regions_geojson(mask, scale=float(downsample))
    del mask
    (out / REGIONS_GEOJSON).write_text(json.dumps(geojson), encoding="utf-8")
    tick("regions")
    _dzsave(mosaic.image, out / "mosaic", ".jpg[Q=85]")
    tick("mosaic_dzi")
    _heat_layer(out, mosaic, downsample)
    tick("heatmap_dzi")
    _mask_layer(out, mosaic, downsample)
    tick("mask_dzi")
    return ExportResult(positive_pixels=positive, regions=len(geojson["features"]), timings=timings)


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
