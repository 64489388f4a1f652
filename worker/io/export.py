"""Writing a segmentation result, all at processing resolution: the heat as a float TIFF and as an 8-bit grey
Deep Zoom pyramid, the mask and its regions at the job's threshold, and a histogram of the heat.

The mosaic's own pyramid is not part of a result: it belongs to the mosaic (:mod:`worker.io.pyramid`) and is
built once for every job on it. The viewer overlays the heat pyramid on it at the mosaic's full-resolution
geometry (a processing pixel covers ``downsample`` x ``downsample`` mosaic pixels), and the API colours the
heat's tiles on request: through a colormap for the heatmap, as ``heat >= threshold`` for the mask at any
threshold (:mod:`worker.io.tiles`). The histogram gives the area at any threshold without the heatmap.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import pyvips

from worker.contract import (
    HEAT_HISTOGRAM,
    HEAT_LAYER,
    HEATMAP_OME_TIFF,
    HEATMAP_TIFF,
    MASK_TIFF,
    MOSAIC_FORMAT,
    REGIONS_GEOJSON,
    SUMMARY_FILE,
    Stage,
)
from worker.io.dicom.segmentation import SegAlgorithm, write_segmentations
from worker.io.mosaic import Mosaic
from worker.io.pyramid import OVERLAP, TILE_SIZE, dzsave
from worker.io.regions import regions_geojson
from worker.progress import Progress, ProgressFn

HISTOGRAM_BINS = 1000
"""Bins of ``heat_histogram.json``: areas are exact at thresholds on the 0.001 grid."""
HEAT_SUFFIX = ".png[compression=1]"
"""Grey PNG tiles; the fastest zlib level (the tiles are small and read once per colouring)."""
TIFF_OPTIONS: dict[str, Any] = {
    "tile": True,
    "tile_width": 256,
    "tile_height": 256,
    "compression": "deflate",
    "level": 1,
}
"""Tiled deflate TIFFs at the fastest level: 20 % larger than level 6, 2.5 x faster to write."""
CHUNK_ROWS = 1024
STEPS = ("heatmap_tif", "heat_pass", "mask_tif", "regions", "heat_dzi", "histogram", "heatmap_ome_tif")


@dataclass
class ExportResult:
    """What export measured: positive pixel count, number of regions, the layers and seconds per step."""

    positive_pixels: int
    regions: int
    timings: dict[str, float] = field(default_factory=dict)
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    dicom: dict[str, str] = field(default_factory=dict)
    """The DICOM Segmentations written (a DICOM mosaic's result): file name to SOP Instance UID."""


def _heat_image(heat: np.ndarray) -> pyvips.Image:
    """A pyvips image of the heatmap.

    A disk-backed heatmap (raw float32 file) is cut into row chunks, each mapped, saved as a tiled TIFF
    beside the raw file and unmapped again, then joined: so no more than one chunk of it is ever resident,
    whatever the mosaic size.
    """
    h, w = heat.shape
    if not _disk_backed(heat):
        return pyvips.Image.new_from_memory(np.ascontiguousarray(heat).data, w, h, 1, "float")
    raw = Path(str(heat.filename))
    chunks = []
    for y in range(0, h, CHUNK_ROWS):
        rows = min(CHUNK_ROWS, h - y)
        part = pyvips.Image.rawload(str(raw), w, rows, 1, offset=y * w * 4, format="float")
        path = raw.with_name(f"{raw.stem}-{y:06d}.tif")
        part.tiffsave(str(path), tile=True, compression="none")
        chunks.append(pyvips.Image.new_from_file(str(path)))
    return pyvips.Image.arrayjoin(chunks, across=1).crop(0, 0, w, h)  # arrayjoin pads cells to one size


def _disk_backed(heat: np.ndarray) -> TypeGuard[np.memmap[Any, Any]]:
    """Whether the heat is a raw float32 file mapped whole (the sink's disk-backed heatmap)."""
    return isinstance(heat, np.memmap) and heat.filename is not None and heat.offset == 0


def _bigtiff(heat: np.ndarray) -> bool:
    return heat.size * 4 > 3 * 1024**3


def _resolution(pixel_size_um: float | None) -> dict[str, Any]:
    """tiffsave's resolution options: pixels per mm, recorded per centimetre (TIFF ResolutionUnit 3)."""
    if pixel_size_um is None:
        return {}
    if not pixel_size_um > 0:
        raise ValueError(f"pixel_size_um must be > 0, got {pixel_size_um}")
    return {"xres": 1000.0 / pixel_size_um, "yres": 1000.0 / pixel_size_um, "resunit": "cm"}


OME_XML = """<?xml version="1.0" encoding="UTF-8"?>
<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"
 xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
 xsi:schemaLocation="http://www.openmicroscopy.org/Schemas/OME/2016-06
 http://www.openmicroscopy.org/Schemas/OME/2016-06/ome.xsd">
<Image ID="Image:0" Name="heat"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="float" BigEndian="false"
 SizeX="{width}" SizeY="{height}" SizeC="1" SizeZ="1" SizeT="1"{physical}>
<Channel ID="Channel:0:0" Name="heat" SamplesPerPixel="1"/><TiffData IFD="0" PlaneCount="1"/></Pixels></Image>
</OME>"""
"""The OME-XML of the heat: one float channel, its physical pixel size where known."""


def write_heatmap_ome(
    heat: pyvips.Image | Path, out: Path, pixel_size_um: float | None, *, bigtiff: bool
) -> None:
    """The heat (an image, or the file heatmap.tif) as a pyramidal OME-TIFF (reduced levels in SubIFDs, as
    QuPath, napari and Bio-Formats read them), with its physical pixel size."""
    img = pyvips.Image.new_from_file(str(heat)) if isinstance(heat, Path) else heat
    physical = (
        f' PhysicalSizeX="{pixel_size_um:.10g}" PhysicalSizeXUnit="µm"'
        f' PhysicalSizeY="{pixel_size_um:.10g}" PhysicalSizeYUnit="µm"'
        if pixel_size_um is not None
        else ""
    )
    img = img.copy()
    img.set_type(
        pyvips.GValue.gstr_type,
        "image-description",
        OME_XML.format(width=img.width, height=img.height, physical=physical),
    )
    img.tiffsave(
        str(out),
        pyramid=True,
        subifd=True,
        bigtiff=bigtiff,
        predictor="none",  # readable without imagecodecs (tifffile, and so napari, decode plain deflate)
        **_resolution(pixel_size_um),
        **TIFF_OPTIONS,
    )


PASS_ROWS = 64
"""Rows of the heatmap per step of the one pass that derives grey, mask and histogram (stays in cache)."""


@dataclass
class HeatPass:
    """What one pass over the heatmap derives: the grey pyramid's pixels, the mask and the histogram."""

    grey: np.ndarray
    mask: np.ndarray
    counts: np.ndarray
    positive: int


def heat_pass(heat: np.ndarray, threshold: float, bins: int = HISTOGRAM_BINS) -> HeatPass:
    """Grey ``round(255 * heat)``, mask ``255 * (heat >= threshold)`` and the histogram of the heat in
    ``bins`` bins of ``[k/bins, (k+1)/bins)`` (heat 1 in the last), in one pass of short row chunks (a
    disk-backed heatmap is read once, in order; only the two 8-bit images are held whole)."""
    h, w = heat.shape
    grey = np.empty((h, w), dtype=np.uint8)
    mask = np.empty((h, w), dtype=np.uint8)
    counts = np.zeros(bins, dtype=np.int64)
    for y in range(0, h, PASS_ROWS):
        rows = np.asarray(heat[y : y + PASS_ROWS], dtype=np.float32)
        grey[y : y + PASS_ROWS] = np.rint(np.clip(rows, 0.0, 1.0) * 255)
        np.multiply(rows >= threshold, 255, out=mask[y : y + PASS_ROWS], casting="unsafe")
        scaled = rows.astype(np.float64)  # so that h * bins >= k exactly when h >= k / bins
        scaled *= bins
        index = np.clip(scaled, 0, bins - 1).astype(np.intp)
        counts += np.bincount(index.ravel(), minlength=bins)
    return HeatPass(grey=grey, mask=mask, counts=counts, positive=int(np.count_nonzero(mask)))


def heat_histogram(heat: np.ndarray, bins: int = HISTOGRAM_BINS) -> list[int]:
    """Pixel counts of heat in ``[k/bins, (k+1)/bins)``, heat 1 in the last bin."""
    return [int(c) for c in heat_pass(heat, 1.0, bins).counts]


def _from_memory(pixels: np.ndarray) -> pyvips.Image:
    h, w = pixels.shape
    return pyvips.Image.new_from_memory(pixels.data, w, h, 1, "uchar").copy(interpretation="b-w")


def _layer(width: int, height: int, fmt: str, **extra: Any) -> dict[str, Any]:
    return {
        "width": width,
        "height": height,
        "tile_size": TILE_SIZE,
        "overlap": OVERLAP,
        "format": fmt,
        **extra,
    }


def result_layers(mosaic: Mosaic, heat_shape: tuple[int, int], downsample: int) -> dict[str, dict[str, Any]]:
    """The layers of a result as ``summary.json`` lists them, with their sizes in pixels.

    ``mosaic`` is the mosaic's own pyramid (the service keeps it with the stored mosaic, the command line in
    ``pyramid/`` of the output folder); ``heat``
    is stored; ``heatmap`` and ``mask`` are the heat's tiles coloured on request; ``heatmap_ome`` is the heat
    as a pyramidal OME-TIFF file (``heatmap.ome.tif``) for QuPath and napari. ``scale`` is mosaic pixels
    per layer pixel: the viewer draws a layer ``width * scale / mosaic width`` viewport units wide.
    """
    h, w = heat_shape
    header = mosaic.header
    rendered = {"rendered_from": HEAT_LAYER, "scale": downsample}
    return {
        "mosaic": _layer(header.width, header.height, MOSAIC_FORMAT, scale=1),
        HEAT_LAYER: _layer(w, h, "png", scale=downsample, bits=8),
        "heatmap": _layer(w, h, "png", **rendered),
        "mask": _layer(w, h, "png", **rendered),
        "heatmap_ome": {
            "file": HEATMAP_OME_TIFF,
            "width": w,
            "height": h,
            "format": "ome-tiff",
            "scale": downsample,
        },
    }


def write_outputs(
    out: Path,
    *,
    heat: np.ndarray,
    mosaic: Mosaic,
    downsample: int,
    threshold: float,
    progress: ProgressFn | None = None,
    pixel_size_um: float | None = None,
    algorithm: SegAlgorithm | None = None,
) -> ExportResult:
    """Write heatmap.tif, heatmap.ome.tif, mask.tif, regions.geojson, the heat pyramid and
    heat_histogram.json into ``out``; for a DICOM mosaic and an ``algorithm``, its two DICOM Segmentations
    (:mod:`worker.io.dicom.segmentation`).

    ``pixel_size_um`` is the processing pixel size; when given, both TIFFs record it (XResolution,
    YResolution in pixels per centimetre, ResolutionUnit 3). Without it they carry libvips' placeholder,
    1 px/mm written as 25.4 per inch, which readers take for "not recorded".
    """
    timings: dict[str, float] = {}

    def report(name: str, seconds: float) -> None:  # on this thread only: progress callbacks need not lock
        timings[name] = seconds
        if progress is not None and name in STEPS:
            progress(Progress(Stage.EXPORT, sum(step in timings for step in STEPS), len(STEPS)))

    big = _bigtiff(heat)
    tiff = {"bigtiff": big, **_resolution(pixel_size_um), **TIFF_OPTIONS}

    def heatmap_ome() -> None:  # from memory, or from heatmap.tif once written for a disk-backed heat
        source = out / HEATMAP_TIFF if _disk_backed(heat) else _heat_image(heat)
        write_heatmap_ome(source, out / HEATMAP_OME_TIFF, pixel_size_um, bigtiff=big)

    dicom: dict[str, str] = {}

    def dicom_segmentations(derived: HeatPass) -> None:
        assert algorithm is not None
        written = write_segmentations(
            out,
            source_path=mosaic.source,
            heat=heat,
            mask=derived.mask,
            downsample=downsample,
            algorithm=algorithm,
        )
        dicom.update(written.files)

    derived, regions = _write_layers(
        out,
        heat=heat,
        threshold=threshold,
        downsample=downsample,
        tiff=tiff,
        report=report,
        heatmap_ome=heatmap_ome,
        dicom_segmentations=(
            dicom_segmentations if algorithm is not None and mosaic.header.format == "dicom" else None
        ),
    )
    return ExportResult(
        positive_pixels=derived.positive,
        regions=regions,
        timings={step: timings[step] for step in (*STEPS, "dicom_segmentations") if step in timings},
        layers=result_layers(mosaic, heat.shape, downsample),
        dicom=dicom,
    )


def _write_layers(
    out: Path,
    *,
    heat: np.ndarray,
    threshold: float,
    downsample: int,
    tiff: dict[str, Any],
    report: Callable[[str, float], None],
    heatmap_ome: Callable[[], None],
    dicom_segmentations: Callable[[HeatPass], None] | None,
) -> tuple[HeatPass, int]:
    """Every file of a result from one pass over the heat; returns that pass and the number of regions.

    heatmap.tif and its OME-TIFF pyramid are written from the heat (a disk-backed heat's pyramid from
    heatmap.tif once written, so the heat is read in one chunk at a time); the mask, regions,
    grey pyramid, histogram and DICOM Segmentations (for a ``dicom_segmentations`` step) from the one
    pass over the heat. Steps that do not depend on one another run side by side: libvips, zlib, the
    tracer and the DICOM encoder release the GIL, so on a GPU machine's many cores export takes about as
    long as its longest chain (on a shared CPU this changes little).
    """
    regions: list[int] = []

    def heatmap_tif() -> None:
        _heat_image(heat).tiffsave(str(out / HEATMAP_TIFF), predictor="float", **tiff)

    def mask_tif() -> None:
        _from_memory(derived.mask).tiffsave(str(out / MASK_TIFF), **tiff)

    def regions_file() -> None:
        geojson = regions_geojson(derived.mask, scale=float(downsample))
        (out / REGIONS_GEOJSON).write_text(json.dumps(geojson), encoding="utf-8")
        regions.append(len(geojson["features"]))

    def heat_dzi() -> None:
        dzsave(_from_memory(derived.grey), out / HEAT_LAYER, HEAT_SUFFIX)

    with ThreadPoolExecutor(max_workers=6, thread_name_prefix="export") as pool:
        tif = pool.submit(_timed, heatmap_tif)

        def ome_after_tif() -> float:
            if _disk_backed(heat):
                tif.result()  # heatmap.tif first: the pyramid is read from it
            return _timed(heatmap_ome)

        running = {tif: "heatmap_tif", pool.submit(ome_after_tif): "heatmap_ome_tif"}
        t0 = time.perf_counter()
        derived = heat_pass(heat, threshold)
        report("heat_pass", time.perf_counter() - t0)
        steps = [(mask_tif, "mask_tif"), (regions_file, "regions"), (heat_dzi, "heat_dzi")]
        if dicom_segmentations is not None:
            steps.append((lambda: dicom_segmentations(derived), "dicom_segmentations"))
        for step, name in steps:
            running[pool.submit(_timed, step)] = name
        t0 = time.perf_counter()
        counts = [int(c) for c in derived.counts]
        histogram = json.dumps({"bins": len(counts), "counts": counts})
        (out / HEAT_HISTOGRAM).write_text(histogram, encoding="utf-8")
        report("histogram", time.perf_counter() - t0)
        for done in as_completed(running):
            report(running[done], done.result())
    return derived, regions[0]


def _timed(step: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    step()
    return time.perf_counter() - t0


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
