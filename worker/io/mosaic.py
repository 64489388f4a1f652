"""Reading RCM mosaics of every supported kind into one 8-bit grey pyvips image. Imports no torch.

Supported: TIFF/BigTIFF (tiled or striped), PNG, JPEG (8 or 16 bit where the format allows), BMP (decoded
with Pillow: the bundled libvips has no BMP loader), VivaScope "VivaBlock" folders of field-of-view BMP
tiles, and DICOM confocal and whole-slide microscopy images, one file or a series folder
(:mod:`worker.io.dicom.read`). 16-bit input maps linearly to 8 bit (value/257); multi-band input becomes
luminance (Rec. 709 weights), an alpha band is dropped, and the result says so in its notes.

VivaBlock assumptions (the exporter writes no grid description we can rely on):
- tiles are the files ``v0000000.bmp``, ``v0000001.bmp``, ... in name order;
- each tile is one square field (1000 px on the VivaScope 1500); rows below the square are the caption
  strip and are cropped;
- the grid is square (n = k x k tiles) unless ``VivaBlockLayout.cols`` says how many tiles a row holds;
- tiles fill the grid in raster order (left to right, each row top to bottom) unless ``serpentine`` is
  set, in which case every other row runs right to left. Missing tiles of the last row stay black.
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyvips
from PIL import Image, UnidentifiedImageError

from worker.errors import MosaicTooLarge, UnreadableMosaic, UnsupportedMosaic
from worker.io.dicom.files import is_dicom_file, is_dicom_folder
from worker.io.files import sha256_of
from worker.io.resolution import recorded_pixel_size_um

LOADERS = {"tiffload": "tiff", "pngload": "png", "jpegload": "jpeg"}
BIT_DEPTHS = {"uchar": 8, "ushort": 16}
TILE_NAME = re.compile(r"^v\d{7}\.bmp$", re.IGNORECASE)
LUMA = [0.2126, 0.7152, 0.0722]
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class MosaicHeader:
    """What the header says, before any pixel is decoded."""

    width: int
    height: int
    bands: int
    bit_depth: int
    format: str
    pixel_size_um: float | None = None
    """What the file records (TIFF/PNG resolution, OME PhysicalSizeX); ``None`` where it records nothing
    plausible."""


@dataclass(frozen=True, kw_only=True)
class VivaBlockLayout:
    """How the field tiles of a VivaBlock folder form the mosaic."""

    cols: int | None = None
    serpentine: bool = False


@dataclass
class Mosaic:
    """An opened mosaic: 8-bit one-band image at full resolution plus what was done to get it."""

    image: pyvips.Image
    header: MosaicHeader
    source: Path
    notes: list[str] = field(default_factory=list)


def _check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise UnreadableMosaic(f"{path}: image has no pixels ({width} x {height})")
    if width * height > max_pixels:
        raise MosaicTooLarge(
            f"{path}: {width} x {height} = {width * height} pixels exceeds the limit of {max_pixels}"
        )


def _check_layout(path: Path, bands: int, bit_depth: int | None, fmt: str) -> None:
    if bit_depth is None:
        raise UnsupportedMosaic(f"{path}: {fmt} sample format is not 8 or 16 bit unsigned")
    if bands not in (1, 2, 3, 4):
        raise UnsupportedMosaic(f"{path}: {bands} bands; expected grey, grey+alpha, RGB or RGBA")


def _is_bmp(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(2) == b"BM"


def _is_tiff(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) in TIFF_SIGNATURES


def _vips_open(path: Path, *, sequential: bool = True) -> pyvips.Image:
    try:
        img = pyvips.Image.new_from_file(
            str(path), access="sequential" if sequential else "random", fail_on="error"
        )
    except pyvips.Error as exc:
        reason = str(exc).strip().splitlines()
        if any("not a known file format" in line for line in reason):
            if _is_tiff(path):
                # libvips names a TIFF cut short before its image directory "not a known file format".
                raise UnreadableMosaic(
                    f"{path}: TIFF file is damaged or truncated (its image directory is missing)"
                ) from None
            raise UnreadableMosaic(f"{path}: not an image in a supported format") from None
        raise UnreadableMosaic(f"{path}: cannot read header ({reason[-1] if reason else exc})") from None
    loader = str(img.get("vips-loader"))
    if loader not in LOADERS:
        raise UnsupportedMosaic(f"{path}: {loader.removesuffix('load')} files are not supported")
    return img


_PILLOW_LIMIT = threading.Lock()


@contextlib.contextmanager
def _open_bmp(path: Path) -> Iterator[Image.Image]:
    """``Image.open`` without Pillow's own decompression-bomb limit, which the pixel limit of this module
    replaces (checked from the header before any pixel is decoded). The limit is Pillow's process-wide
    setting, so it is lifted only while the header is read, under a lock, and restored."""
    with _PILLOW_LIMIT:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    with im:
        yield im


def _bmp_header(path: Path) -> MosaicHeader:
    try:
        with _open_bmp(path) as im:
            width, height = im.size
            bands = {"1": 1, "L": 1, "P": 1, "RGB": 3, "RGBA": 4}.get(im.mode)
    except (UnidentifiedImageError, OSError) as exc:
        raise UnreadableMosaic(f"{path}: cannot read BMP header ({exc})") from None
    if bands is None:
        raise UnsupportedMosaic(f"{path}: BMP mode {im.mode} is not supported")
    return MosaicHeader(width=width, height=height, bands=bands, bit_depth=8, format="bmp")


def _tiles(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if TILE_NAME.match(p.name))


def _grid(n: int, layout: VivaBlockLayout, folder: Path) -> tuple[int, int]:
    if layout.cols is not None:
        if layout.cols < 1:
            raise UnsupportedMosaic(f"{folder}: grid columns must be >= 1")
        return layout.cols, math.ceil(n / layout.cols)
    k = math.isqrt(n)
    if k * k != n:
        raise UnsupportedMosaic(
            f"{folder}: {n} tiles do not form a square grid; give the number of columns (--grid-cols)"
        )
    return k, k


def _vivablock_header(folder: Path, layout: VivaBlockLayout) -> tuple[MosaicHeader, list[Path], int]:
    tiles = _tiles(folder)
    if not tiles:
        raise UnreadableMosaic(f"{folder}: folder holds no VivaBlock tiles (v0000000.bmp, ...)")
    first = _bmp_header(tiles[0])
    fov = first.width
    if first.height < fov:
        raise UnsupportedMosaic(
            f"{tiles[0]}: tile is wider than tall; expected a square field above a caption"
        )
    cols, rows = _grid(len(tiles), layout, folder)
    header = MosaicHeader(width=cols * fov, height=rows * fov, bands=1, bit_depth=8, format="vivablock")
    return header, tiles, fov


def probe(path: Path, *, max_pixels: int, layout: VivaBlockLayout | None = None) -> MosaicHeader:
    """Read only the header: size, bands, bit depth and format; enforce the pixel limit."""
    path = Path(path)
    if is_dicom_folder(path) or is_dicom_file(path):
        header = _dicom_header(path)
    elif path.is_dir():
        header = _vivablock_header(path, layout or VivaBlockLayout())[0]
    elif not path.is_file():
        raise UnreadableMosaic(f"{path}: no such file")
    elif path.stat().st_size == 0:
        raise UnreadableMosaic(f"{path}: file is empty")
    elif _is_bmp(path):
        header = _bmp_header(path)
    else:
        img = _vips_open(path)
        fmt = LOADERS[str(img.get("vips-loader"))]
        header = MosaicHeader(
            width=img.width,
            height=img.height,
            bands=img.bands,
            bit_depth=BIT_DEPTHS.get(img.format, 0),
            format=fmt,
            pixel_size_um=recorded_pixel_size_um(img),
        )
        _check_layout(path, header.bands, BIT_DEPTHS.get(img.format), f"{fmt} {img.format}")
    _check_pixels(path, header.width, header.height, max_pixels)
    return header


def _dicom_header(path: Path) -> MosaicHeader:
    from worker.io.dicom.read import describe  # pydicom only when a mosaic is DICOM (the API probes all)

    info = describe(path)
    fmt = f"dicom {info.bit_depth}-bit"
    _check_layout(path, info.bands, info.bit_depth, fmt)
    return MosaicHeader(
        width=info.width,
        height=info.height,
        bands=info.bands,
        bit_depth=info.bit_depth,
        format="dicom",
        pixel_size_um=info.pixel_size_um,
    )


def _to_grey8(img: pyvips.Image, notes: list[str]) -> pyvips.Image:
    scale = 1.0
    if img.format == "ushort":
        scale = 1.0 / 257.0
        notes.append("16-bit input mapped linearly to 8 bit (value/257)")
    if img.bands == 2 or img.bands == 4:
        notes.append("alpha band dropped")
        img = img[: img.bands - 1]
    if img.bands == 3:
        notes.append("3-band input converted to luminance (0.2126 R + 0.7152 G + 0.0722 B)")
        img = img.recomb([LUMA])
    if scale != 1.0 or img.format != "uchar":
        img = (img * scale).rint().cast("uchar")
    return img.copy(interpretation="b-w")


def _bmp_array(path: Path) -> np.ndarray:
    try:
        with _open_bmp(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA"):
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
                return np.rint(rgb @ np.asarray(LUMA, dtype=np.float32)).clip(0, 255).astype(np.uint8)
            return np.asarray(im.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise UnreadableMosaic(f"{path}: cannot decode BMP ({exc})") from None


def _vivablock_array(
    folder: Path, layout: VivaBlockLayout, header: MosaicHeader, tiles: list[Path], fov: int
) -> np.ndarray:
    cols = header.width // fov
    out = np.zeros((header.height, header.width), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        row, col = divmod(i, cols)
        if layout.serpentine and row % 2 == 1:
            col = cols - 1 - col
        pixels = _bmp_array(tile)
        if pixels.shape[1] != fov or pixels.shape[0] < fov:
            raise UnsupportedMosaic(
                f"{tile}: tile is {pixels.shape[1]} x {pixels.shape[0]}, expected {fov} wide"
            )
        out[row * fov : (row + 1) * fov, col * fov : (col + 1) * fov] = pixels[:fov]
    return out


def open_mosaic(
    path: Path, *, max_pixels: int, layout: VivaBlockLayout | None = None, sequential: bool = False
) -> Mosaic:
    """Open any supported mosaic as an 8-bit one-band image; header problems fail before decoding.

    ``sequential`` opens a libvips-read file for reading once from top to bottom (a PNG or JPEG is then
    decoded strip by strip as it is read, instead of whole at the first pixel asked for)."""
    path = Path(path)
    layout = layout or VivaBlockLayout()
    header = probe(path, max_pixels=max_pixels, layout=layout)
    notes: list[str] = []
    if header.format == "vivablock":
        _, tiles, fov = _vivablock_header(path, layout)
        pixels = _vivablock_array(path, layout, header, tiles, fov)
        notes.append(
            f"VivaBlock of {len(tiles)} tiles, {header.width // fov} x {header.height // fov} grid "
            f"of {fov} px fields, {'serpentine' if layout.serpentine else 'raster'} order, "
            "caption strips cropped"
        )
        image = pyvips.Image.new_from_array(pixels)
    elif header.format == "bmp":
        pixels = _bmp_array(path)
        if header.bands > 1:
            notes.append("3-band input converted to luminance (0.2126 R + 0.7152 G + 0.0722 B)")
        image = pyvips.Image.new_from_array(pixels)
    elif header.format == "dicom":
        from worker.io.dicom.read import describe, dicom_image

        info = describe(path)
        notes.extend(info.notes)
        image = _to_grey8(dicom_image(info), notes)
    else:
        image = _to_grey8(_vips_open(path, sequential=sequential), notes)
    return Mosaic(image=image.copy(interpretation="b-w"), header=header, source=path, notes=notes)


def verify_readable(path: Path, *, max_pixels: int, layout: VivaBlockLayout | None = None) -> MosaicHeader:
    """Header check plus a full decode, so truncated pixel data is found before a file is accepted."""
    mosaic = open_mosaic(path, max_pixels=max_pixels, layout=layout)
    try:
        mosaic.image.avg()
    except pyvips.Error as exc:
        raise decode_error(path, exc) from None
    return mosaic.header


def decode_error(path: Path, exc: pyvips.Error) -> UnreadableMosaic:
    """The user-facing error for a failure found while pixels are being decoded."""
    lines = str(exc).strip().splitlines()
    return UnreadableMosaic(f"{path}: pixel data is damaged or truncated ({lines[-1] if lines else exc})")


def input_sha256(path: Path) -> str:
    """SHA-256 of a file, of a DICOM series folder's base level, or of a VivaBlock folder's tiles (names and
    bytes, in order)."""
    if is_dicom_folder(path):
        from worker.io.dicom.read import base_level

        return sha256_of([base_level(path)])
    if path.is_dir():
        return sha256_of(_tiles(path), with_names=True)
    return sha256_of([path])
