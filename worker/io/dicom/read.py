"""Reading a DICOM mosaic: a Confocal Microscopy Image (single frame, or tiled TILED_FULL / TILED_SPARSE) or
the base level of a VL Whole Slide Microscopy Image (one file, or a series folder of its levels).

The header is read first (no pixel data), so the pixel limit and the SOP class are checked before anything is
decoded. Frames are decoded by pydicom with whichever decoder plugin is installed (pylibjpeg, Pillow,
pyjpegls, pydicom's own RLE); a transfer syntax no installed plugin decodes is refused by name. Imports no
torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pyvips
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder, iter_pixels
from pydicom.uid import UID, JPEGLSLossless, JPEGLSNearLossless

from models.errors import RcmSegError
from worker.errors import UnreadableMosaic, UnsupportedMosaic
from worker.io.dicom.files import dicom_files

WSM_IMAGE = UID("1.2.840.10008.5.1.4.1.1.77.1.6")
CONFOCAL_IMAGE = UID("1.2.840.10008.5.1.4.1.1.77.1.8")
CONFOCAL_TILED_IMAGE = UID("1.2.840.10008.5.1.4.1.1.77.1.9")
READ_SOP_CLASSES = (CONFOCAL_IMAGE, CONFOCAL_TILED_IMAGE, WSM_IMAGE)
"""The SOP classes rcmseg reads a mosaic from."""
NOT_BASE_LEVEL = frozenset({"THUMBNAIL", "LABEL", "OVERVIEW"})
"""Image Type values (its third) of the images of a slide series that are not its pyramid."""
PLAUSIBLE_PIXEL_UM = (0.05, 20.0)
FASTEST_PLUGIN = {JPEGLSLossless: "pyjpegls", JPEGLSNearLossless: "pyjpegls"}
"""Where the installed plugins differ in speed: CharLS (pyjpegls) decodes JPEG-LS frames about 4 times
faster than pylibjpeg's libjpeg, which pydicom would pick first."""
UID_TEXT = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def valid_uid(text: str) -> bool:
    """A DICOM UID: dot-separated numbers without leading zeros, at most 64 characters."""
    return len(text) <= 64 and UID_TEXT.match(text) is not None


@dataclass(frozen=True)
class DicomMosaic:
    """What the header of a DICOM mosaic says: the file holding it, its size and layout, its pixel size."""

    path: Path
    sop_class: UID
    width: int
    height: int
    bands: int
    bit_depth: int
    transfer_syntax: UID
    pixel_size_um: float | None
    notes: list[str] = field(default_factory=list)


def _read_header(path: Path) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        raise UnreadableMosaic(f"{path}: cannot read the DICOM header ({exc})") from None


def _sop_class(ds: Dataset, path: Path) -> UID:
    sop = UID(str(ds.get("SOPClassUID", "")))
    if not valid_uid(sop):
        raise UnreadableMosaic(f"{path}: the DICOM header is damaged or truncated (no valid SOP Class UID)")
    if sop not in READ_SOP_CLASSES:
        name = sop.name if sop.name != str(sop) else "unknown"
        raise UnsupportedMosaic(
            f"{path}: a DICOM {name} object (SOP class {sop}) is not a mosaic; rcmseg reads Confocal "
            "Microscopy Image and VL Whole Slide Microscopy Image objects"
        )
    return sop


def _spacing_of(item: Dataset) -> list[float] | None:
    measures = item.get("PixelMeasuresSequence")
    if measures and "PixelSpacing" in measures[0]:
        return [float(v) for v in measures[0].PixelSpacing]
    return None


def pixel_spacing(ds: Dataset) -> tuple[float | None, str]:
    """The pixel size in um and the attribute it came from: Pixel Spacing of the shared Pixel Measures
    functional group, of the first frame's, or the top-level attribute. ``None`` when none records a square,
    plausible size."""
    found: tuple[list[float] | None, str] = (None, "")
    for sequence, where in (
        ("SharedFunctionalGroupsSequence", "the shared Pixel Measures functional group"),
        ("PerFrameFunctionalGroupsSequence", "the first frame's Pixel Measures functional group"),
    ):
        groups = ds.get(sequence)
        if groups and found[0] is None:
            found = (_spacing_of(groups[0]), where)
    if found[0] is None and "PixelSpacing" in ds:
        found = ([float(v) for v in ds.PixelSpacing], "the top-level attribute")
    spacing, where = found
    if spacing is None or len(spacing) != 2:
        return None, "no Pixel Spacing"
    rows_mm, cols_mm = spacing
    size = cols_mm * 1000.0
    lo, hi = PLAUSIBLE_PIXEL_UM
    if not math.isclose(rows_mm, cols_mm, rel_tol=1e-3) or not lo <= size <= hi:
        return None, f"Pixel Spacing {rows_mm:g} \\ {cols_mm:g} mm (not square or implausible) in {where}"
    return size, f"Pixel Spacing (0028,0030) of {where}"


MAX_FRAME_SIDE = 4096
"""The largest frame side accepted beyond the total pixel matrix's (tiles are 256 to 2048 px in practice)."""


def _check_frames(ds: Dataset, width: int, height: int, kind: str) -> None:
    """Refuse a tiled file whose frames would decode to far more pixels than its total pixel matrix holds
    (a few kilobytes of JPEG 2000 can claim a 65535 px frame): each frame side within the matrix's (or
    ``MAX_FRAME_SIDE``), and at most twice the frames the matrix needs (focal planes, optical paths)."""
    if kind == "SINGLE":
        return
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if not (0 < rows <= max(height, MAX_FRAME_SIDE) and 0 < cols <= max(width, MAX_FRAME_SIDE)):
        raise UnsupportedMosaic(
            f"{ds.filename}: frames of {cols} x {rows} px for a {width} x {height} px total pixel matrix"
        )
    needed = math.ceil(width / cols) * math.ceil(height / rows)
    if frames > 2 * needed:
        raise UnsupportedMosaic(
            f"{ds.filename}: {frames} frames where a {width} x {height} px matrix in {cols} x {rows} px "
            f"tiles needs {needed}"
        )


def _layout_of(ds: Dataset) -> tuple[int, int, str]:
    """Width, height and how the frames make the mosaic."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if "TotalPixelMatrixColumns" in ds:
        kind = str(ds.get("DimensionOrganizationType", "TILED_SPARSE"))
        if kind not in ("TILED_FULL", "TILED_SPARSE"):
            kind = "TILED_SPARSE"  # positions per frame: the one layout that says where each frame goes
        return int(ds.TotalPixelMatrixColumns), int(ds.TotalPixelMatrixRows), kind
    if frames != 1:
        raise UnsupportedMosaic(
            f"{ds.filename}: {frames} frames without a total pixel matrix (a stack, not a mosaic)"
        )
    return int(ds.Columns), int(ds.Rows), "SINGLE"


def _check_decodable(ts: UID, path: Path) -> None:
    if not ts.is_compressed:
        return
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        decoder = None
    if decoder is None or not decoder.is_available:
        name = ts.name if ts.name != str(ts) else "unknown transfer syntax"
        raise UnsupportedMosaic(f"{path}: pixel data in {name} ({ts}), which no installed decoder reads")


def _describe(path: Path, ds: Dataset) -> DicomMosaic:
    sop = _sop_class(ds, path)
    ts = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2.1")))
    _check_decodable(ts, path)
    try:
        width, height, kind = _layout_of(ds)
        _check_frames(ds, width, height, kind)
        bits = int(ds.get("BitsAllocated", 0))
        representation = int(ds.get("PixelRepresentation", 0))
        bands = int(ds.get("SamplesPerPixel", 1))
        size, source = pixel_spacing(ds)
    except RcmSegError:
        raise
    except (AttributeError, ValueError, TypeError) as exc:  # a header that stops early or holds nonsense
        raise UnreadableMosaic(f"{path}: the DICOM header is damaged or truncated ({exc})") from None
    if bits not in (8, 16) or representation != 0:
        signed = "signed" if representation else "unsigned"
        raise UnsupportedMosaic(f"{path}: {bits}-bit {signed} samples; rcmseg reads 8 or 16 bit unsigned")
    notes = [f"DICOM {sop.name}, {kind.lower().replace('_', ' ')}, {ts.name}"]
    notes.append(f"pixel size {size:g} um from {source}" if size is not None else f"pixel size: {source}")
    return DicomMosaic(
        path=path,
        sop_class=sop,
        width=width,
        height=height,
        bands=bands,
        bit_depth=bits,
        transfer_syntax=ts,
        pixel_size_um=size,
        notes=notes,
    )


def base_level(folder: Path) -> Path:
    """The file of a series folder holding its base level: the largest image that is not a thumbnail,
    label or overview. Files of other SOP classes (a stored Segmentation) are left out; more than one
    series is refused."""
    candidates: list[tuple[int, str, Path]] = []
    series: set[str] = set()
    refused: list[Exception] = []
    for path in dicom_files(folder):
        ds = _read_header(path)
        try:
            _sop_class(ds, path)
        except UnsupportedMosaic as exc:
            refused.append(exc)
            continue
        image_type = [str(v).upper() for v in ds.get("ImageType", [])]
        if len(image_type) > 2 and image_type[2] in NOT_BASE_LEVEL:
            continue
        series.add(str(ds.get("SeriesInstanceUID", "")))
        width, height, _ = _layout_of(ds)
        candidates.append((-(width * height), str(ds.get("InstanceNumber", "")), path))
    if len(series) > 1:
        raise UnsupportedMosaic(f"{folder}: the folder holds {len(series)} series; give one series folder")
    if not candidates:
        if refused:
            raise refused[0]
        raise UnreadableMosaic(f"{folder}: the folder holds no DICOM image")
    return min(candidates)[2]


def series_base_level(folder: Path) -> Path | None:
    """The base level of a folder that holds one series of images; ``None`` for a folder of anything else
    (several series, no DICOM image)."""
    if not dicom_files(folder):
        return None
    try:
        return base_level(folder)
    except (UnsupportedMosaic, UnreadableMosaic):
        return None


def describe(path: Path) -> DicomMosaic:
    """The header of a DICOM mosaic file or series folder (the base level's file)."""
    file = base_level(path) if path.is_dir() else path
    return _describe(file, _read_header(file))


def _sparse_positions(ds: Dataset, frames: int) -> list[tuple[int, int] | None]:
    """Each frame's top-left corner (0-based) in the total pixel matrix; ``None`` for a frame of another
    focal plane or optical path than the first frame's."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != frames:
        raise UnreadableMosaic(
            f"{ds.filename}: TILED_SPARSE image with {len(per_frame)} per-frame positions for {frames} frames"
        )
    positions: list[tuple[int, int] | None] = []
    first_plane = None
    for item in per_frame:
        plane = item.get("PlanePositionSlideSequence")
        if not plane:
            raise UnreadableMosaic(f"{ds.filename}: a TILED_SPARSE frame without its Plane Position (Slide)")
        pos = plane[0]
        path_items = item.get("OpticalPathIdentificationSequence") or []
        key = (
            str(pos.get("ZOffsetInSlideCoordinateSystem", "")),
            str(path_items[0].get("OpticalPathIdentifier", "")) if path_items else "",
        )
        first_plane = first_plane or key
        if key != first_plane:
            positions.append(None)
            continue
        positions.append(
            (
                int(pos.RowPositionInTotalImagePixelMatrix) - 1,
                int(pos.ColumnPositionInTotalImagePixelMatrix) - 1,
            )
        )
    return positions


def _full_positions(ds: Dataset, frames: int, width: int, height: int) -> list[tuple[int, int] | None]:
    """TILED_FULL: tiles in row-major order, the first focal plane and optical path first."""
    rows, cols = int(ds.Rows), int(ds.Columns)
    across, down = math.ceil(width / cols), math.ceil(height / rows)
    if frames < across * down:
        raise UnreadableMosaic(
            f"{ds.filename}: TILED_FULL image with {frames} frames for {across * down} tiles"
        )
    return [(i // across * rows, i % across * cols) if i < across * down else None for i in range(frames)]


def _plugin(ts: UID) -> str:
    """The decoder plugin to use: the fastest installed where they differ, else pydicom's choice ("")."""
    fastest = FASTEST_PLUGIN.get(ts, "")
    return fastest if fastest and fastest in get_decoder(ts).available_plugins else ""


def _decode(info: DicomMosaic) -> np.ndarray:
    ds = pydicom.dcmread(info.path, stop_before_pixels=True)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _, _, kind = _layout_of(ds)
    if kind == "SINGLE":
        positions: list[tuple[int, int] | None] = [(0, 0)]
    elif kind == "TILED_FULL":
        positions = _full_positions(ds, frames, info.width, info.height)
    else:
        positions = _sparse_positions(ds, frames)
    dtype = np.uint8 if info.bit_depth == 8 else np.uint16
    shape = (info.height, info.width) if info.bands == 1 else (info.height, info.width, info.bands)
    out = np.zeros(shape, dtype=dtype)
    invert = str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    decoded = 0
    needed = max(i + 1 for i, where in enumerate(positions) if where is not None)
    pixels = iter_pixels(info.path, as_rgb=True, decoding_plugin=_plugin(info.transfer_syntax))
    # positions first: zip stops before decoding a frame past the last one placed
    for where, frame in zip(positions[:needed], pixels, strict=False):
        decoded += 1
        if where is None:
            continue
        y, x = where
        h, w = min(frame.shape[0], info.height - y), min(frame.shape[1], info.width - x)
        if y < 0 or x < 0 or h <= 0 or w <= 0:
            raise UnreadableMosaic(f"{info.path}: a frame lies outside the total pixel matrix")
        out[y : y + h, x : x + w] = frame[:h, :w]
    if decoded < needed:
        raise UnreadableMosaic(f"{info.path}: pixel data is truncated ({decoded} of {needed} frames)")
    if invert:
        out = np.iinfo(dtype).max - out
    return out


def dicom_image(info: DicomMosaic) -> pyvips.Image:
    """The mosaic's pixels at their bit depth and bands (RGB where the file stores YBR), as a pyvips image."""
    try:
        pixels = _decode(info)
    except (
        NotImplementedError,
        RuntimeError,
        ValueError,
        EOFError,
        OSError,
        KeyError,
        AttributeError,
    ) as exc:
        if isinstance(exc, UnreadableMosaic | UnsupportedMosaic):
            raise
        reason = str(exc).strip().splitlines()
        raise UnreadableMosaic(
            f"{info.path}: pixel data ({info.transfer_syntax.name}) is damaged or truncated "
            f"({reason[-1] if reason else type(exc).__name__})"
        ) from None
    return pyvips.Image.new_from_array(pixels)
