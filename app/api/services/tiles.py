"""Result layers as the API serves them: which file a layer's descriptor or tile is, and the coloured tiles.

A result written since pyramids are per mosaic stores its heat once, as an 8-bit grey pyramid at processing
resolution (``heat.dzi``); the heatmap and the mask are that pyramid's tiles coloured on request
(:mod:`worker.io.tiles`), so one descriptor serves both and any colormap or threshold costs no pass over the
heatmap. A result written before has the three full-resolution layers as files, served as they are.
Regions at another threshold than the job's are computed from ``heatmap.tif`` at the threshold rounded to
the viewer slider's step (0.01), once, and kept in the result's ``cache/`` folder: at most
``REGIONS_CACHE_FILES`` thresholds, the least recently used one deleted first; the folder goes with the
result when it expires.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyvips

from worker.contract import HEAT_LAYER, HEATMAP_TIFF, REGIONS_GEOJSON, RENDERED_LAYERS, RESULT_CACHE
from worker.io.colormap import HEATMAP_COLORMAP, TRANSPARENT_BELOW, colormap_names
from worker.io.regions import regions_geojson
from worker.io.tiles import DziGeometry, heat_tile, mask_tile, read_dzi

REGIONS_DECIMALS = 2
"""Regions at a threshold are computed at the threshold rounded to this many decimals (the viewer's step)."""
REGIONS_CACHE_FILES = 32
"""Thresholds whose regions one result keeps; past it, the least recently used file is deleted."""

RENDER_VERSION = "1"
"""Part of every coloured tile's ETag: bump it when the same URL starts to give other pixels."""


@dataclass(frozen=True, kw_only=True)
class TileStyle:
    """How a heat tile is coloured: the heatmap by colormap and fade, the mask by ``threshold`` (the job's
    own unless the request gives one; it has no default of its own)."""

    threshold: float
    colormap: str = HEATMAP_COLORMAP
    transparent_below: float = TRANSPARENT_BELOW

    def key(self, layer: str) -> str:
        if layer == "mask":
            return f"threshold={self.threshold!r}"
        return f"colormap={self.colormap}&transparent_below={self.transparent_below!r}"


def is_rendered(folder: Path) -> bool:
    """Whether the result in ``folder`` stores the heat pyramid (written since pyramids are per mosaic)."""
    return (folder / f"{HEAT_LAYER}.dzi").is_file()


def check_colormap(name: str) -> None:
    if name not in colormap_names():
        raise ValueError(f"unknown colormap {name!r}; colormaps are {', '.join(colormap_names())}")


@functools.lru_cache(maxsize=256)
def _geometry(path: str, _mtime_ns: int) -> DziGeometry:
    return read_dzi(Path(path))


def heat_geometry(folder: Path) -> DziGeometry:
    path = folder / f"{HEAT_LAYER}.dzi"
    return _geometry(str(path), path.stat().st_mtime_ns)


def heat_tile_path(folder: Path, level: int, col: int, row: int) -> Path:
    """The grey tile of the heat pyramid; raises ``OutsidePyramid`` for a level or tile it lacks."""
    geometry = heat_geometry(folder)
    geometry.check_tile(level, col, row)
    return folder / f"{HEAT_LAYER}_files" / str(level) / f"{col}_{row}.{geometry.format}"


def etag(job_id: str, layer: str, level: int, col: int, row: int, style: TileStyle) -> str:
    """A strong ETag of one coloured tile: the same URL always gives the same bytes."""
    text = f"{RENDER_VERSION}|{job_id}|{layer}|{level}|{col}|{row}|{style.key(layer)}"
    return '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'


def render_tile(grey: Path, layer: str, style: TileStyle) -> bytes:
    """A coloured PNG tile of ``layer`` (heatmap or mask) from the heat tile file ``grey``."""
    if layer not in RENDERED_LAYERS:
        raise ValueError(f"layer {layer!r} is not coloured on request")
    data = grey.read_bytes()
    if layer == "mask":
        return mask_tile(data, threshold=style.threshold)
    return heat_tile(data, colormap=style.colormap, transparent_below=style.transparent_below)


def regions_threshold(threshold: float) -> float:
    """The threshold regions are computed at: rounded to the slider's step, so nearby values share one."""
    return round(threshold, REGIONS_DECIMALS)


def regions_at(folder: Path, threshold: float, *, job_threshold: float, downsample: int) -> Path:
    """The regions GeoJSON of the result in ``folder`` at ``threshold`` (rounded by ``regions_threshold``),
    computed once and kept in a bounded cache."""
    if threshold == job_threshold:
        return folder / REGIONS_GEOJSON
    threshold = regions_threshold(threshold)
    if threshold == job_threshold:
        return folder / REGIONS_GEOJSON
    cache = folder / RESULT_CACHE
    path = cache / f"regions-{threshold:.{REGIONS_DECIMALS}f}.geojson"
    try:
        os.utime(path)  # a hit: the most recently used file now
        return path
    except FileNotFoundError:
        pass
    tiff = pyvips.Image.new_from_file(str(folder / HEATMAP_TIFF))
    heat = np.asarray(tiff.numpy()).reshape(
        tiff.height, tiff.width
    )  # numpy() drops the axes of a 1 x 1 image
    geojson: dict[str, Any] = regions_geojson(heat >= threshold, scale=float(downsample))
    del heat
    cache.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".regions-", suffix=".tmp", dir=cache)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(geojson, fh)
        os.replace(tmp, path)  # concurrent requests for one threshold each write all of it; one wins
    finally:
        Path(tmp).unlink(missing_ok=True)
    evict_regions(cache, keep=REGIONS_CACHE_FILES)
    return path


def evict_regions(cache: Path, *, keep: int) -> int:
    """Delete all but the ``keep`` most recently used regions files of ``cache``; returns how many went."""
    entries = []
    for entry in cache.glob("regions-*.geojson"):
        try:
            entries.append((entry.stat().st_mtime_ns, entry))
        except FileNotFoundError:  # evicted by a concurrent request
            continue
    entries.sort(reverse=True)
    for _, stale in entries[keep:]:
        stale.unlink(missing_ok=True)
    return max(len(entries) - keep, 0)
