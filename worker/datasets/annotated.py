"""Annotated mosaics on disk: finding each mosaic's label map, its patient and pixel size, and reading labels.

A folder of mosaics holds ``{id}.tif`` (or .tiff/.png/.jpg) beside ``{id}_labels.png`` (or .tif/.nrrd/.nhdr,
codes 0..6; NRRD is what Seg3D, the paper's annotation tool, exports). An optional ``manifest.csv`` (as
written by ``rcmseg phantom``) gives each mosaic's patient and pixel size; without one, each mosaic is its own
patient and ``--pixel-size-um`` applies to all.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyvips

from models.errors import InvalidParameter
from models.training.weak_labels import NUM_CODES, downsample_labels
from worker.errors import UnreadableMosaic
from worker.io.mosaic import probe

log = logging.getLogger(__name__)

MOSAIC_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
LABEL_SUFFIXES = ("_labels.png", "_labels.tif", "_labels.tiff", "_labels.nrrd", "_labels.nhdr")
MAX_PIXELS = 20000 * 20000
PROCESSING_PIXEL_SIZE_UM = 2.0


@dataclass(frozen=True)
class AnnotatedMosaic:
    """A mosaic file, its label map file, its patient and its pixel size."""

    name: str
    image: Path
    labels: Path
    patient: str
    pixel_size_um: float

    def downsample(self, processing_um: float = PROCESSING_PIXEL_SIZE_UM) -> int:
        """The integer factor to the processing pixel size (4 for 0.5 um/px mosaics, 1 for phantoms)."""
        return max(1, round(processing_um / self.pixel_size_um))


def read_manifest(folder: Path) -> dict[str, dict[str, str]]:
    path = folder / "manifest.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


def find_mosaics(folder: Path, *, pixel_size_um: float | None = None) -> list[AnnotatedMosaic]:
    """Every mosaic of ``folder`` that has a label map, sorted by name."""
    if not folder.is_dir():
        raise InvalidParameter(f"{folder}: no such folder")
    manifest = read_manifest(folder)
    found = []
    for label_path in sorted(folder.iterdir()):
        suffix = next((s for s in LABEL_SUFFIXES if label_path.name.lower().endswith(s)), None)
        if suffix is None:
            continue
        name = label_path.name[: -len(suffix)]
        image = next(
            (folder / f"{name}{s}" for s in MOSAIC_SUFFIXES if (folder / f"{name}{s}").is_file()), None
        )
        if image is None:
            log.warning("%s: no mosaic beside this label map, skipped", label_path)
            continue
        row = manifest.get(name, {})
        size = float(row["pixel_size_um"]) if row.get("pixel_size_um") else pixel_size_um
        if size is None:
            raise InvalidParameter(f"{image}: pixel size unknown; give --pixel-size-um or a manifest.csv")
        found.append(AnnotatedMosaic(name, image, label_path, row.get("patient") or name, size))
    if not found:
        raise InvalidParameter(f"{folder}: no mosaic with a label map ({{id}}_labels.png/.nrrd) found")
    return found


def read_labels(path: Path) -> np.ndarray:
    """A label map (PNG/TIFF, or NRRD as Seg3D exports it) as a 2-D uint8 array of codes 0..6."""
    if path.suffix.lower() in (".nrrd", ".nhdr"):
        import nrrd

        try:
            data, _ = nrrd.read(str(path), index_order="C")
        except (nrrd.NRRDError, OSError, ValueError) as exc:
            raise UnreadableMosaic(f"{path}: unreadable NRRD ({exc})") from None
        data = np.squeeze(np.asarray(data))
    else:
        try:
            img = pyvips.Image.new_from_file(str(path), access="sequential", fail_on="error")
            if img.bands > 1:
                img = img[0]
            data = img.numpy()
        except pyvips.Error as exc:
            raise UnreadableMosaic(f"{path}: unreadable label image ({str(exc).strip()})") from None
    if data.ndim != 2:
        raise UnreadableMosaic(f"{path}: label map must be 2-D, got shape {data.shape}")
    if data.size and (data.min() < 0 or data.max() >= NUM_CODES):
        raise UnreadableMosaic(
            f"{path}: label codes must be 0..{NUM_CODES - 1}, found {int(data.min())}..{int(data.max())}"
        )
    return data.astype(np.uint8, copy=False)


def labels_for(mosaic: AnnotatedMosaic, factor: int, full_shape: tuple[int, int]) -> np.ndarray:
    """The label map at the processing pixel size (``factor`` below the mosaic's ``full_shape``), given at
    full resolution or already downsampled."""
    return _at_processing_size(mosaic, read_labels(mosaic.labels), factor, full_shape)


def processing_labels(mosaic: AnnotatedMosaic) -> np.ndarray:
    """The label map at the processing pixel size, checked against the mosaic's size."""
    labels = read_labels(mosaic.labels)
    header = probe(mosaic.image, max_pixels=MAX_PIXELS)
    return _at_processing_size(mosaic, labels, mosaic.downsample(), (header.height, header.width))


def _at_processing_size(
    mosaic: AnnotatedMosaic, labels: np.ndarray, factor: int, full_shape: tuple[int, int]
) -> np.ndarray:
    if labels.shape == full_shape:
        return downsample_labels(labels, factor)
    if labels.shape == (full_shape[0] // factor, full_shape[1] // factor):
        return labels
    raise InvalidParameter(
        f"{mosaic.labels}: label map is {labels.shape[1]} x {labels.shape[0]}, mosaic is "
        f"{full_shape[1]} x {full_shape[0]}"
    )
