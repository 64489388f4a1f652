"""Mask regions as GeoJSON that QuPath imports as "Aspecific" annotations.

Outlines follow pixel edges: processing pixel ``(x, y)`` is the square ``[x, x + 1] x [y, y + 1]``, scaled
by the downsample factor ``k`` to full-resolution pixels (QuPath's convention), so a region's polygon area
is its pixel count times ``k**2`` and a one-pixel region is a ``k x k`` square. One feature per
8-connected region: a ``Polygon`` (outer ring, then its holes as interior rings), or a ``MultiPolygon``
when the region's parts touch only at pixel corners. Every geometry is valid by the OGC rules (shapely's
``is_valid``): rings never cross or touch themselves, exteriors run counter-clockwise and holes clockwise
in the coordinates' own frame (RFC 7946).

The boundary is traced on the pixel grid: every pixel edge between an inside and an outside pixel is a
directed segment with the inside on its right (in image coordinates, y down); collinear edges are merged
into one segment per run. At a corner where two inside pixels touch diagonally, two rings pass through one
vertex; the trace turns right there, so each ring stays with its own pixel and rings only touch, never
cross. A ring that still passes a vertex twice (a region that closes on itself at a corner) is split there
into an outer ring and a hole touching it at that point, which OGC allows; ``shapely.make_valid`` stays
as a guard only.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import cv2
import numpy as np
import numpy.typing as npt
import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping

ASPECIFIC_COLOR = [220, 40, 40]

Region: TypeAlias = Polygon | MultiPolygon


def _runs(change: npt.NDArray[np.bool_]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(line, start, end) of every run of True along axis 1, end exclusive."""
    padded = np.zeros((change.shape[0], change.shape[1] + 2), np.int8)
    padded[:, 1:-1] = change
    step = np.diff(padded, axis=1)
    line, start = np.nonzero(step == 1)
    _, end = np.nonzero(step == -1)
    return line, start, end


def _segments(inside: npt.NDArray[np.bool_]) -> tuple[np.ndarray, np.ndarray]:
    """Start and end vertices (``x, y`` integer grid points) of the boundary's directed segments."""
    padded = np.zeros((inside.shape[0] + 2, inside.shape[1] + 2), np.int8)
    padded[1:-1, 1:-1] = inside
    # +1 where the pixel above (left) is inside and the one below (right) outside, -1 the other way round
    horizontal = padded[:-1, 1:-1] - padded[1:, 1:-1]  # edges on grid line y, between rows y - 1 and y
    vertical = (padded[1:-1, :-1] - padded[1:-1, 1:]).T  # edges on grid line x, between columns x - 1 and x
    starts, ends = [], []
    for sign in (1, -1):  # runs of one sign only, so that every junction is a segment end
        y, x0, x1 = _runs(horizontal == sign)
        a, b = np.stack([x0, y], 1), np.stack([x1, y], 1)
        starts.append(b if sign == 1 else a)  # inside above: walk west; inside below: walk east
        ends.append(a if sign == 1 else b)
        x, y0, y1 = _runs(vertical == sign)
        a, b = np.stack([x, y0], 1), np.stack([x, y1], 1)
        starts.append(a if sign == 1 else b)  # inside left: walk south; inside right: walk north
        ends.append(b if sign == 1 else a)
    return np.concatenate(starts).astype(np.int64), np.concatenate(ends).astype(np.int64)


def _successors(starts: np.ndarray, ends: np.ndarray, width: int) -> np.ndarray:
    """The segment that follows each one: the one starting where it ends, the right turn at a corner
    where two pass through (inside on the right, so a right turn stays with the same pixel)."""
    keys = starts[:, 1] * (width + 1) + starts[:, 0]
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    end_keys = ends[:, 1] * (width + 1) + ends[:, 0]
    first = np.searchsorted(sorted_keys, end_keys, side="left")
    count = np.searchsorted(sorted_keys, end_keys, side="right") - first
    if not np.all((count == 1) | (count == 2)):
        raise RuntimeError("boundary trace: a vertex without a way on")  # cannot happen on a pixel grid
    nxt = order[first]
    two = np.flatnonzero(count == 2)
    if two.size:
        direction = np.sign(ends - starts)
        right = np.stack([-direction[two, 1], direction[two, 0]], 1)  # (dx, dy) turned right, y down
        alternative = order[first[two] + 1]
        takes_alternative = ~np.all(direction[nxt[two]] == right, axis=1)
        nxt[two[takes_alternative]] = alternative[takes_alternative]
    return nxt


def _rings(inside: npt.NDArray[np.bool_]) -> list[np.ndarray]:
    """Closed rings of grid vertices (first vertex repeated last), inside on the right of travel."""
    starts, ends = _segments(inside)
    if not len(starts):
        return []
    nxt = _successors(starts, ends, inside.shape[1])
    seen = np.zeros(len(starts), bool)
    rings = []
    for first in range(len(starts)):
        if seen[first]:
            continue
        cycle = [first]
        seen[first] = True
        i = int(nxt[first])
        while i != first:
            cycle.append(i)
            seen[i] = True
            i = int(nxt[i])
        rings.extend(_simple_loops(starts[cycle]))
    return rings


def _simple_loops(vertices: np.ndarray) -> list[np.ndarray]:
    """A traced cycle split at every vertex it passes twice (a region closing on itself at a corner), so
    that no ring touches itself: an outer ring and holes that touch it there, as OGC wants. Closed rings."""
    keys = vertices[:, 1].astype(np.int64) << 32 | vertices[:, 0]
    if len(np.unique(keys)) == len(keys):
        return [np.concatenate([vertices, vertices[:1]])]
    loops = []
    stack: list[int] = []
    at: dict[int, int] = {}
    for i, key in enumerate(keys.tolist()):
        if key in at:  # back at a vertex: the stretch since then is one closed loop
            j = at[key]
            loop = stack[j:]
            loops.append(vertices[[*loop, loop[0]]])
            for k in loop[1:]:
                del at[int(keys[k])]
            del stack[j + 1 :]
        else:
            at[key] = len(stack)
            stack.append(i)
    loops.append(vertices[[*stack, stack[0]]])
    return loops


def _pixel_right_of(ring: np.ndarray) -> tuple[int, int]:
    """``(x, y)`` of the inside pixel on the right of the ring's first segment."""
    (x0, y0), (x1, y1) = ring[0], ring[1]
    dx, dy = int(np.sign(x1 - x0)), int(np.sign(y1 - y0))
    # centre of the first unit edge, moved half a pixel to the right of travel: (-dy, dx) in y-down axes
    cx, cy = x0 + dx / 2 - dy / 2, y0 + dy / 2 + dx / 2
    return int(np.floor(cx)), int(np.floor(cy))


def _repaired(geometry: shapely.Geometry) -> shapely.Geometry:
    """``geometry`` if valid, else its polygons as ``shapely.make_valid`` repairs them (a guard: the trace
    above gives valid rings)."""
    if geometry.is_valid:
        return geometry
    parts = [g for g in shapely.get_parts(shapely.make_valid(geometry)) if isinstance(g, Polygon)]
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)


def mask_regions(mask: np.ndarray, *, scale: float) -> list[Region]:
    """One valid polygon geometry per 8-connected region of ``mask`` (any non-zero value is inside), in
    processing-pixel edge coordinates times ``scale``."""
    inside = np.asarray(mask) != 0
    rings = _rings(inside)
    if not rings:
        return []
    binary = inside.astype(np.uint8)
    # Each ring bounds one 4-connected piece (the right turn keeps diagonal pixels apart): its outer
    # ring runs counter-clockwise (positive shoelace area in x, y), its holes clockwise.
    _, piece = cv2.connectedComponents(binary, connectivity=4)
    _, region = cv2.connectedComponents(binary, connectivity=8)
    shells: dict[int, np.ndarray] = {}
    holes: dict[int, list[np.ndarray]] = {}
    region_of: dict[int, int] = {}
    for ring in rings:
        x, y = _pixel_right_of(ring)
        label = int(piece[y, x])
        area2 = float(np.sum(ring[:-1, 0] * ring[1:, 1] - ring[1:, 0] * ring[:-1, 1]))
        if area2 > 0:
            shells[label] = ring
            region_of[label] = int(region[y, x])
        else:
            holes.setdefault(label, []).append(ring)
    parts: dict[int, list[Polygon]] = {}
    for label, shell in shells.items():
        polygon = Polygon(shell * scale, [h * scale for h in holes.get(label, [])])
        parts.setdefault(region_of[label], []).append(polygon)
    out: list[Region] = []
    for label in sorted(parts):
        pieces = parts[label]  # pieces of one region meet at pixel corners only
        geometry = _repaired(pieces[0] if len(pieces) == 1 else MultiPolygon(pieces))
        out.append(shapely.orient_polygons(geometry))
    return out


def regions_geojson(mask: np.ndarray, *, scale: float, name: str = "Aspecific") -> dict[str, Any]:
    """A FeatureCollection of one Polygon or MultiPolygon annotation per 8-connected mask region (QuPath's
    import format), in full-resolution pixels: processing pixels times ``scale``."""
    features = [
        {
            "type": "Feature",
            "geometry": mapping(geometry),
            "properties": {
                "objectType": "annotation",
                "classification": {"name": name, "color": ASPECIFIC_COLOR},
                "isLocked": False,
            },
        }
        for geometry in mask_regions(mask, scale=scale)
    ]
    return {"type": "FeatureCollection", "features": features}
