"""Mask polygons as GeoJSON that QuPath imports as "Aspecific" annotations."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

ASPECIFIC_COLOR = [220, 40, 40]


def _ring(points: np.ndarray, scale: float) -> list[list[float]]:
    pts = points.reshape(-1, 2).astype(np.float64)
    ring = ((pts + 0.5) * scale).round(2).tolist()
    if len(ring) < 3:  # a one- or two-pixel component: use its bounding box
        x0, y0 = pts.min(axis=0) * scale
        x1, y1 = (pts.max(axis=0) + 1) * scale
        ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]
    return [*ring, ring[0]]


def mask_polygons(mask: np.ndarray, *, scale: float) -> list[list[list[list[float]]]]:
    """Polygons (outer ring then holes) of a binary mask, in pixel coordinates multiplied by ``scale``."""
    binary = mask if mask.dtype == np.uint8 else (mask > 0).astype(np.uint8)  # any non-zero is inside
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    links = hierarchy[0]
    polygons: list[list[list[list[float]]]] = []
    for i, contour in enumerate(contours):
        if links[i][3] != -1:  # a hole: attached to its parent below
            continue
        rings = [_ring(contour, scale)]
        child = links[i][2]
        while child != -1:
            if len(contours[child]) >= 3:
                rings.append(_ring(contours[child], scale))
            child = links[child][0]
        polygons.append(rings)
    return polygons


def regions_geojson(mask: np.ndarray, *, scale: float, name: str = "Aspecific") -> dict[str, Any]:
    """A FeatureCollection of one Polygon annotation per connected mask region (QuPath's import format)."""
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": rings},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": name, "color": ASPECIFIC_COLOR},
                "isLocked": False,
            },
        }
        for rings in mask_polygons(mask, scale=scale)
    ]
    return {"type": "FeatureCollection", "features": features}
