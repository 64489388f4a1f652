"""Tiles of the heat pyramid coloured on request, and the geometry of a Deep Zoom pyramid.

A heat tile is an 8-bit grey PNG (grey value ``round(255 * heat)``). An 8-bit grey PNG and an 8-bit palette
PNG store their pixels the same way (one byte per pixel, same filters, same zlib stream), so colouring a
tile through any 256-entry lookup table is a matter of rewriting its header and adding the table (``PLTE``
colours, ``tRNS`` opacities): the pixel data is copied as it is, never decoded. The mask at a threshold is
the same trick with a two-valued table. Imports no torch (the API colours tiles with it).
"""

from __future__ import annotations

import functools
import math
import struct
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worker.io.colormap import rgba_lut

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MASK_RGBA = (0, 229, 255, 255)
"""The mask's colour: cyan, opaque (the viewer sets the layer's opacity)."""


class OutsidePyramid(LookupError):
    """A level or tile index that the pyramid does not have; ``field`` names which."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class DziGeometry:
    """What a ``.dzi`` descriptor says: full size, tile size, overlap and tile format."""

    width: int
    height: int
    tile_size: int
    overlap: int
    format: str

    @property
    def max_level(self) -> int:
        """Deep Zoom levels run 0 (1 x 1 px) to this one (full size)."""
        return max(0, math.ceil(math.log2(max(self.width, self.height))))

    def level_size(self, level: int) -> tuple[int, int]:
        scale = 2 ** (self.max_level - level)
        return math.ceil(self.width / scale), math.ceil(self.height / scale)

    def check_tile(self, level: int, col: int, row: int) -> None:
        """Raise ``OutsidePyramid`` naming ``level``, ``col`` or ``row`` when the tile does not exist."""
        if not 0 <= level <= self.max_level:
            raise OutsidePyramid("level", f"{level} is outside the pyramid (levels 0..{self.max_level})")
        w, h = self.level_size(level)
        cols, rows = math.ceil(w / self.tile_size), math.ceil(h / self.tile_size)
        if not 0 <= col < cols:
            raise OutsidePyramid("col", f"{col} is outside level {level} (columns 0..{cols - 1})")
        if not 0 <= row < rows:
            raise OutsidePyramid("row", f"{row} is outside level {level} (rows 0..{rows - 1})")


def read_dzi(path: Path) -> DziGeometry:
    """The geometry of a ``.dzi`` file written by libvips' ``dzsave``."""
    root = ET.fromstring(path.read_text(encoding="utf-8"))
    size = next(el for el in root.iter() if el.tag.endswith("Size"))
    return DziGeometry(
        width=int(size.attrib["Width"]),
        height=int(size.attrib["Height"]),
        tile_size=int(root.attrib["TileSize"]),
        overlap=int(root.attrib["Overlap"]),
        format=root.attrib["Format"],
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def palette_png(grey_png: bytes, rgba: np.ndarray) -> bytes:
    """The 8-bit grey PNG ``grey_png`` with each grey value ``i`` shown as ``rgba[i]`` ((256, 4) uint8).

    Ancillary chunks of the input are dropped; its pixel data (``IDAT``) is kept byte for byte.
    """
    if not grey_png.startswith(PNG_SIGNATURE):
        raise ValueError("not a PNG")
    pos, ihdr, idat = len(PNG_SIGNATURE), b"", []
    while pos + 8 <= len(grey_png):
        (length,) = struct.unpack(">I", grey_png[pos : pos + 4])
        kind = grey_png[pos + 4 : pos + 8]
        if kind == b"IHDR":
            ihdr = grey_png[pos + 8 : pos + 8 + length]
        elif kind == b"IDAT":
            idat.append(grey_png[pos : pos + 12 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    # IHDR: width, height (4 bytes each), bit depth, colour type, compression, filter, interlace.
    if len(ihdr) != 13 or ihdr[8] != 8 or ihdr[9] != 0 or ihdr[12] != 0:
        raise ValueError("not an 8-bit grey, non-interlaced PNG")
    plte, trns = _palette_chunks(np.ascontiguousarray(rgba, dtype=np.uint8).tobytes())
    return b"".join(
        [
            PNG_SIGNATURE,
            _chunk(b"IHDR", ihdr[:9] + b"\x03" + ihdr[10:]),
            plte,
            trns,
            *idat,
            _chunk(b"IEND", b""),
        ]
    )


@functools.lru_cache(maxsize=256)
def _palette_chunks(rgba: bytes) -> tuple[bytes, bytes]:
    table = np.frombuffer(rgba, dtype=np.uint8).reshape(256, 4)
    return _chunk(b"PLTE", table[:, :3].tobytes()), _chunk(b"tRNS", table[:, 3].tobytes())


def threshold_level(threshold: float) -> int:
    """The lowest grey value shown by the mask at ``threshold``: ``ceil(255 * threshold)``.

    Grey ``g`` holds heat within half a step of ``g / 255``, so the mask drawn from the pyramid matches
    ``heat >= threshold`` except for heat within 1/510 of the threshold.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in 0..1, got {threshold}")
    return math.ceil(round(255 * threshold, 6))


@functools.lru_cache(maxsize=512)
def mask_rgba(threshold: float, color: tuple[int, int, int, int] = MASK_RGBA) -> np.ndarray:
    """The (256, 4) table that draws grey values at or above the threshold in ``color``, others clear."""
    table = np.zeros((256, 4), dtype=np.uint8)
    table[threshold_level(threshold) :] = color
    return table


def heat_tile(grey_png: bytes, *, colormap: str, transparent_below: float) -> bytes:
    """A heat tile coloured through ``colormap``, fading to transparent below ``transparent_below``."""
    return palette_png(grey_png, rgba_lut(colormap, transparent_below))


def mask_tile(grey_png: bytes, *, threshold: float) -> bytes:
    """A mask tile: heat at or above ``threshold`` in the mask colour, the rest transparent."""
    return palette_png(grey_png, mask_rgba(threshold))
