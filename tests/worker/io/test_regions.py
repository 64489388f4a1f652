"""Mask regions as QuPath GeoJSON: coordinates at full resolution, holes as inner rings, one feature a region.

The rings run through the centres of a region's boundary pixels: processing pixel ``(x, y)`` has its centre
at ``((x + 0.5) * k, (y + 0.5) * k)`` in full-resolution pixels for downsample factor ``k``, and GeoJSON
positions are ``[x, y]``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from matplotlib.path import Path as Polygon

from worker.io.regions import ASPECIFIC_COLOR, mask_polygons, regions_geojson


def write_and_read(tmp_path: Path, mask: np.ndarray, *, scale: float) -> dict[str, Any]:
    """The GeoJSON of ``mask`` as QuPath reads it: through a file."""
    path = tmp_path / "regions.geojson"
    path.write_text(json.dumps(regions_geojson(mask, scale=scale)), encoding="utf-8")
    return json.loads(path.read_text(encoding="utf-8"))


def corners(ring: list[list[float]]) -> set[tuple[float, float]]:
    return {(x, y) for x, y in ring}


def inside(ring: list[list[float]], x: float, y: float) -> bool:
    return bool(Polygon(np.array(ring)).contains_point((x, y)))


def test_a_rectangle_comes_back_in_full_resolution_pixels(tmp_path: Path) -> None:
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 20:40] = 1  # rows 10..19, columns 20..39: wider than tall, so x and y cannot be swapped
    collection = write_and_read(tmp_path, mask, scale=4)
    assert collection["type"] == "FeatureCollection"
    [feature] = collection["features"]
    assert feature["type"] == "Feature"
    assert feature["geometry"]["type"] == "Polygon"
    assert feature["properties"] == {
        "objectType": "annotation",
        "classification": {"name": "Aspecific", "color": ASPECIFIC_COLOR},
        "isLocked": False,
    }
    [ring] = feature["geometry"]["coordinates"]
    assert ring[0] == ring[-1] and len(ring) == 5  # closed, four corners
    x0, x1 = (20 + 0.5) * 4, (39 + 0.5) * 4
    y0, y1 = (10 + 0.5) * 4, (19 + 0.5) * 4
    assert corners(ring) == {(x0, y0), (x1, y0), (x1, y1), (x0, y1)}


def test_the_ring_rasterised_back_at_processing_resolution_is_the_mask() -> None:
    mask = np.zeros((50, 50), np.uint8)
    mask[7:31, 12:45] = 1
    [[ring]] = mask_polygons(mask, scale=8)
    centres = np.rint(np.array(ring) / 8 - 0.5).astype(np.int32)
    back = cv2.fillPoly(np.zeros_like(mask), [centres], 1)
    np.testing.assert_array_equal(back, mask)


def test_the_factor_only_scales_the_coordinates() -> None:
    mask = np.zeros((30, 30), np.uint8)
    mask[3:9, 4:20] = 1
    [[one]] = mask_polygons(mask, scale=1)
    [[four]] = mask_polygons(mask, scale=4)
    np.testing.assert_allclose(np.array(four), np.array(one) * 4)


def test_a_region_with_a_hole_has_an_inner_ring(tmp_path: Path) -> None:
    mask = np.zeros((40, 40), np.uint8)
    mask[5:25, 5:25] = 1
    mask[12:18, 12:18] = 0  # a 6 x 6 hole in a 20 x 20 square
    [feature] = write_and_read(tmp_path, mask, scale=2)["features"]
    outer, hole = feature["geometry"]["coordinates"]
    assert outer[0] == outer[-1] and hole[0] == hole[-1]
    assert corners(outer) == {(11.0, 11.0), (49.0, 11.0), (49.0, 49.0), (11.0, 49.0)}
    xs, ys = [p[0] for p in hole], [p[1] for p in hole]
    # The inner ring runs through the centres of the region's pixels around the hole: columns/rows 11 and 18.
    assert (min(xs), max(xs), min(ys), max(ys)) == (23.0, 37.0, 23.0, 37.0)
    centre = (15 * 2, 15 * 2)
    assert inside(outer, *centre) and inside(hole, *centre)
    in_region = ((8 + 0.5) * 2, (8 + 0.5) * 2)
    assert inside(outer, *in_region) and not inside(hole, *in_region)


def test_two_separate_regions_give_two_features(tmp_path: Path) -> None:
    mask = np.zeros((40, 80), np.uint8)
    mask[2:10, 3:13] = 1
    mask[20:35, 50:70] = 1
    features = write_and_read(tmp_path, mask, scale=3)["features"]
    assert len(features) == 2
    boxes = set()
    for feature in features:
        [ring] = feature["geometry"]["coordinates"]
        xs, ys = [p[0] for p in ring], [p[1] for p in ring]
        boxes.add((min(xs), min(ys), max(xs), max(ys)))
    assert boxes == {
        (3.5 * 3, 2.5 * 3, 12.5 * 3, 9.5 * 3),
        (50.5 * 3, 20.5 * 3, 69.5 * 3, 34.5 * 3),
    }


def test_an_empty_mask_gives_an_empty_feature_collection(tmp_path: Path) -> None:
    expected = {"type": "FeatureCollection", "features": []}
    assert write_and_read(tmp_path, np.zeros((20, 30), np.uint8), scale=4) == expected
    assert write_and_read(tmp_path, np.zeros((20, 30), bool), scale=4) == expected


def test_any_non_zero_value_is_inside() -> None:
    ones = np.zeros((20, 20), np.uint8)
    ones[4:12, 6:15] = 1
    expected = mask_polygons(ones, scale=2)
    assert mask_polygons(ones * 255, scale=2) == expected  # what pyvips writes for heat >= threshold
    assert mask_polygons(ones.astype(bool), scale=2) == expected
    assert mask_polygons(ones.astype(np.float32) * 0.7, scale=2) == expected


def test_a_single_pixel_region_is_a_closed_ring_around_it(tmp_path: Path) -> None:
    mask = np.zeros((10, 10), np.uint8)
    mask[3, 4] = 1
    [feature] = write_and_read(tmp_path, mask, scale=2)["features"]
    [ring] = feature["geometry"]["coordinates"]
    assert ring[0] == ring[-1] and len(ring) == 5
    assert inside(ring, (4 + 0.5) * 2, (3 + 0.5) * 2)
