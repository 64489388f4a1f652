"""The pixel size a mosaic file records: OME-XML, TIFF resolution tags or PNG pHYs, read through libvips."""

from __future__ import annotations

import math
import re

import pyvips

PLAUSIBLE_PIXEL_UM = (0.05, 20.0)
"""Pixel sizes a microscope mosaic can have. Outside it a recorded resolution is a writer's placeholder
(libvips reports 1 px/mm where a file has none; 72 or 300 dpi are common defaults), not a measurement."""
OME_SIZE = re.compile(r'PhysicalSizeX="([0-9.eE+-]+)"(?:[^>]*?PhysicalSizeXUnit="([^"]+)")?')
OME_UNITS_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3}


def recorded_pixel_size_um(img: pyvips.Image) -> float | None:
    """The pixel size a file records: OME-XML ``PhysicalSizeX`` first, else the TIFF X/YResolution or PNG
    pHYs (libvips gives both as pixels per mm); ``None`` when it is missing, not square or implausible."""
    size: float | None = None
    if "image-description" in img.get_fields():
        match = OME_SIZE.search(str(img.get("image-description")))
        if match is not None and (match.group(2) or "µm") in OME_UNITS_UM:
            size = float(match.group(1)) * OME_UNITS_UM[match.group(2) or "µm"]
    if size is None and img.xres > 0 and math.isclose(img.xres, img.yres, rel_tol=1e-3):
        size = 1000.0 / img.xres
    lo, hi = PLAUSIBLE_PIXEL_UM
    return size if size is not None and lo <= size <= hi else None
