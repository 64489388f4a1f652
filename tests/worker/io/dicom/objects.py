"""Small DICOM objects built for the tests: confocal images in each layout, compressed frames, and objects
rcmseg must refuse (a CT image, a Segmentation). Never downloaded."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import CTImageStorage, JPEGBaseline8Bit, generate_uid

from worker.io.dicom.dicomize import StudyFields, save_atomically, wsm_image
from worker.io.dicom.read import CONFOCAL_IMAGE, CONFOCAL_TILED_IMAGE

PIXEL_UM = 0.5


def phantom_pixels(height: int = 300, width: int = 420, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (height, width), dtype=np.uint8)


def wsm(pixels: np.ndarray, *, tile: int = 128, key: str = "test") -> Dataset:
    return wsm_image(pixels, pixel_size_um=PIXEL_UM, fields=StudyFields(), key=key, tile=tile)


def confocal_tiled(pixels: np.ndarray, *, sparse: bool = False, tile: int = 128) -> Dataset:
    """A Confocal Microscopy Tiled Pyramidal Image; TILED_SPARSE frames are stored in reverse order with
    their positions, so a reader that ignores them gets the mosaic wrong."""
    ds = wsm(pixels, tile=tile)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CONFOCAL_TILED_IMAGE
    if not sparse:
        return ds
    h, w = pixels.shape
    across, down = math.ceil(w / tile), math.ceil(h / tile)
    frames = np.frombuffer(ds.PixelData, dtype=np.uint8).reshape(-1, tile, tile)
    order = list(reversed(range(across * down)))
    per_frame = []
    for i in order:
        plane = Dataset()
        plane.RowPositionInTotalImagePixelMatrix = i // across * tile + 1
        plane.ColumnPositionInTotalImagePixelMatrix = i % across * tile + 1
        plane.XOffsetInSlideCoordinateSystem = 0.0
        plane.YOffsetInSlideCoordinateSystem = 0.0
        plane.ZOffsetInSlideCoordinateSystem = 0.0
        item = Dataset()
        item.PlanePositionSlideSequence = Sequence([plane])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.DimensionOrganizationType = "TILED_SPARSE"
    ds.PixelData = np.ascontiguousarray(frames[order]).tobytes()
    return ds


def confocal_single(pixels: np.ndarray, *, spacing: str = "shared") -> Dataset:
    """A single-frame Confocal Microscopy Image with Pixel Spacing where ``spacing`` says: the shared or
    per-frame functional group, or the top-level attribute."""
    ds = wsm(pixels)
    for name in ("TotalPixelMatrixColumns", "TotalPixelMatrixRows", "DimensionOrganizationType"):
        delattr(ds, name)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CONFOCAL_IMAGE
    ds.Rows, ds.Columns = pixels.shape
    ds.NumberOfFrames = 1
    ds.PixelData = pixels.tobytes()
    measures = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence
    if spacing == "per-frame":
        item = Dataset()
        item.PixelMeasuresSequence = measures
        ds.PerFrameFunctionalGroupsSequence = Sequence([item])
        del ds.SharedFunctionalGroupsSequence
    elif spacing == "top":
        ds.PixelSpacing = measures[0].PixelSpacing
        del ds.SharedFunctionalGroupsSequence
    return ds


def jpeg_baseline(ds: Dataset) -> Dataset:
    """``ds`` with its frames encoded as JPEG baseline by Pillow (pydicom encodes no JPEG baseline)."""
    frames = np.frombuffer(ds.PixelData, dtype=np.uint8).reshape(-1, int(ds.Rows), int(ds.Columns))
    encoded = []
    for frame in frames:
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=95)
        encoded.append(buf.getvalue())
    ds.PixelData = encapsulate(encoded)
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    return ds


def ct_image() -> Dataset:
    ds = wsm(phantom_pixels(64, 64))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    save_atomically(ds, path)
    return path


def dciodvfy_errors(path: Path) -> list[str]:
    """The errors dicom3tools' validator reports for ``path`` (its warnings are left out)."""
    import shutil
    import subprocess

    import pytest

    if shutil.which("dciodvfy") is None:
        pytest.fail("dciodvfy missing: install the Debian package dicom3tools (make system-deps)")
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    lines = (proc.stdout + proc.stderr).splitlines()
    return [line for line in lines if line.startswith(("Error", "Abort"))]
