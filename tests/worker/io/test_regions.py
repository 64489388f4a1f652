"""Mask regions as QuPath GeoJSON: valid OGC geometries on pixel edges, in full-resolution pixels.

Processing pixel ``(x, y)`` is the square ``[x, x + 1] x [y, y + 1]``; at downsample factor ``k`` its corners
are ``k`` times those in full-resolution pixels, GeoJSON positions being ``[x, y]``. A region's area is its
pixel count times ``k**2``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, shape

from worker.io import regions as regions_module
from worker.io.regions import ASPECIFIC_COLOR, mask_regions, regions_geojson


@pytest.fixture(autouse=True)
def no_repair(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trace itself must give valid geometry: the make_valid guard may not run in these tests."""

    def refuse(geometry: Any) -> Any:
        raise AssertionError(f"make_valid was needed for {geometry.wkt[:200]}")

    monkeypatch.setattr(regions_module.shapely, "make_valid", refuse)


def write_and_read(tmp_path: Path, mask: np.ndarray, *, scale: float) -> dict[str, Any]:
    """The GeoJSON of ``mask`` as QuPath reads it: through a file."""
    path = tmp_path / "regions.geojson"
    path.write_text(json.dumps(regions_geojson(mask, scale=scale)), encoding="utf-8")
    return json.loads(path.read_text(encoding="utf-8"))


def geometries(collection: dict[str, Any]) -> list[Polygon | MultiPolygon]:
    return [shape(f["geometry"]) for f in collection["features"]]


def polygons(geometry: Polygon | MultiPolygon) -> list[Polygon]:
    return list(geometry.geoms) if isinstance(geometry, MultiPolygon) else [geometry]


def check_valid(geometry: Polygon | MultiPolygon) -> None:
    """OGC-valid, with RFC 7946 ring orientation (exterior counter-clockwise, holes clockwise)."""
    assert geometry.is_valid, shapely.is_valid_reason(geometry)
    for polygon in polygons(geometry):
        assert polygon.exterior.is_ccw
        assert not any(ring.is_ccw for ring in polygon.interiors)


def rasterise(geometry_list: list[Polygon | MultiPolygon], shape_hw: tuple[int, int], k: float) -> np.ndarray:
    """Which processing pixels have their centre inside one of the geometries."""
    yy, xx = np.mgrid[0 : shape_hw[0], 0 : shape_hw[1]]
    out = np.zeros(shape_hw, bool)
    for g in geometry_list:
        out |= shapely.contains_xy(g, (xx + 0.5) * k, (yy + 0.5) * k)
    return out


def test_a_rectangle_comes_back_on_its_pixel_edges_in_full_resolution_pixels(tmp_path: Path) -> None:
    mask = np.zeros((40, 60), np.uint8)
    mask[10:20, 20:40] = 1  # rows 10..19, columns 20..39: wider than tall, so x and y cannot be swapped
    collection = write_and_read(tmp_path, mask, scale=4)
    assert collection["type"] == "FeatureCollection"
    [feature] = collection["features"]
    assert feature["type"] == "Feature" and feature["geometry"]["type"] == "Polygon"
    assert feature["properties"] == {
        "objectType": "annotation",
        "classification": {"name": "Aspecific", "color": ASPECIFIC_COLOR},
        "isLocked": False,
    }
    [ring] = feature["geometry"]["coordinates"]
    assert ring[0] == ring[-1] and len(ring) == 5  # closed, four corners, no vertex on a straight edge
    assert {tuple(p) for p in ring} == {(80.0, 40.0), (160.0, 40.0), (160.0, 80.0), (80.0, 80.0)}
    [geometry] = geometries(collection)
    check_valid(geometry)
    assert geometry.area == 200 * 4**2


@pytest.mark.parametrize("k", [1, 2, 4])
def test_one_pixel_and_two_by_two_regions_have_their_own_areas(k: int) -> None:
    mask = np.zeros((10, 12), np.uint8)
    mask[3, 4] = 1
    mask[6:8, 8:10] = 1
    one, four = mask_regions(mask, scale=k)
    assert one.bounds == (4 * k, 3 * k, 5 * k, 4 * k) and one.area == k**2
    assert four.bounds == (8 * k, 6 * k, 10 * k, 8 * k) and four.area == 4 * k**2


def test_the_factor_only_scales_the_coordinates() -> None:
    mask = np.zeros((30, 30), np.uint8)
    mask[3:9, 4:20] = 1
    mask[5, 10] = 0
    [one] = mask_regions(mask, scale=1)
    [four] = mask_regions(mask, scale=4)
    assert shapely.equals_exact(shapely.transform(one, lambda c: c * 4), four, tolerance=0)


def test_holes_are_interior_rings_on_their_pixel_edges(tmp_path: Path) -> None:
    mask = np.zeros((40, 40), np.uint8)
    mask[5:25, 5:25] = 1
    mask[12:18, 12:18] = 0  # a 6 x 6 hole in a 20 x 20 square
    mask[30:33, 30:33] = 1
    mask[31, 31] = 0  # a one-pixel hole in a 3 x 3 square
    big, small = geometries(write_and_read(tmp_path, mask, scale=2))
    for g in (big, small):
        check_valid(g)
        assert isinstance(g, Polygon) and len(g.interiors) == 1
    assert big.exterior.bounds == (10, 10, 50, 50) and big.interiors[0].bounds == (24, 24, 36, 36)
    assert big.area == (400 - 36) * 4 and Polygon(big.interiors[0]).area == 36 * 4
    assert Polygon(small.interiors[0]).area == 4 and small.area == 8 * 4
    assert not big.contains(shapely.Point(30, 30)) and big.contains(shapely.Point(17, 17))


def test_pixels_touching_at_a_corner_are_one_region_of_polygons_that_only_touch(tmp_path: Path) -> None:
    mask = np.zeros((6, 6), np.uint8)
    mask[1, 1] = mask[2, 2] = mask[3, 1] = 1  # a diagonal chain: one 8-connected region of three pixels
    [geometry] = geometries(write_and_read(tmp_path, mask, scale=3))
    check_valid(geometry)
    assert isinstance(geometry, MultiPolygon) and len(geometry.geoms) == 3
    assert geometry.area == 3 * 9
    a, b, _ = geometry.geoms
    assert a.intersection(b).geom_type == "Point"  # they meet at one corner


def test_a_region_that_closes_on_itself_at_a_corner_is_a_polygon_with_a_touching_hole() -> None:
    # A 5 x 5 block around a 2 x 2 pocket, its corner pixel removed: the pocket reaches the outside only
    # through the corner where pixels (x 2, y 1) and (x 1, y 2) touch, so the block's outline passes that
    # corner twice, the pinched ring QuPath rejected.
    mask = np.zeros((8, 8), np.uint8)
    mask[1:6, 1:6] = 1
    mask[2:4, 2:4] = 0
    mask[1, 1] = 0
    [geometry] = mask_regions(mask, scale=3)
    check_valid(geometry)
    assert isinstance(geometry, Polygon) and len(geometry.interiors) == 1
    assert Polygon(geometry.interiors[0]).area == 4 * 9
    assert geometry.exterior.intersection(geometry.interiors[0]).equals(shapely.Point(6, 6))
    assert geometry.area == int(mask.sum()) * 9
    np.testing.assert_array_equal(rasterise([geometry], mask.shape, 3), mask > 0)


def test_two_holes_touching_at_a_corner_stay_two_holes() -> None:
    mask = np.ones((6, 6), np.uint8)
    mask[2, 2] = mask[3, 3] = 0
    [geometry] = mask_regions(mask, scale=2)
    check_valid(geometry)
    assert isinstance(geometry, Polygon) and len(geometry.interiors) == 2
    assert geometry.area == 34 * 4


def test_a_one_pixel_bridge_keeps_two_blocks_one_polygon() -> None:
    mask = np.zeros((12, 20), np.uint8)
    mask[2:9, 1:7] = 1
    mask[2:9, 12:19] = 1
    mask[5, 7:12] = 1  # one pixel wide, five long
    mask[4, 9] = 1  # a one-pixel spur on the bridge
    [geometry] = mask_regions(mask, scale=4)
    check_valid(geometry)
    assert isinstance(geometry, Polygon) and not geometry.interiors
    assert geometry.area == int(mask.sum()) * 16
    np.testing.assert_array_equal(rasterise([geometry], mask.shape, 4), mask > 0)


@pytest.mark.parametrize(
    ("seed", "blur", "level"), [(0, 0.0, 0.5), (1, 0.0, 0.3), (2, 1.2, 0.0), (3, 3.0, 0.4)]
)
def test_random_masks_give_valid_regions_that_rasterise_back(seed: int, blur: float, level: float) -> None:
    rng = np.random.default_rng(seed)
    field = rng.standard_normal((90, 110)).astype(np.float32)
    if blur:
        field = cv2.GaussianBlur(field, (0, 0), blur)
    mask = (field > level * field.std()).astype(np.uint8)
    found = mask_regions(mask, scale=2)
    n_regions = cv2.connectedComponents(mask, connectivity=8)[0] - 1
    assert len(found) == n_regions > 0
    for g in found:
        check_valid(g)
    assert sum(g.area for g in found) == int(mask.sum()) * 4
    assert shapely.union_all(found).area == int(mask.sum()) * 4  # regions do not overlap
    np.testing.assert_array_equal(rasterise(found, mask.shape, 2), mask > 0)


def test_an_empty_mask_gives_an_empty_feature_collection(tmp_path: Path) -> None:
    expected = {"type": "FeatureCollection", "features": []}
    assert write_and_read(tmp_path, np.zeros((20, 30), np.uint8), scale=4) == expected
    assert write_and_read(tmp_path, np.zeros((20, 30), bool), scale=4) == expected


def test_any_non_zero_value_is_inside_and_the_border_is_no_edge() -> None:
    ones = np.zeros((20, 20), np.uint8)
    ones[0:12, 6:20] = 1  # touches the top and right borders
    [expected] = mask_regions(ones, scale=2)
    assert expected.bounds == (12, 0, 40, 24)
    for variant in (ones * 255, ones.astype(bool), ones.astype(np.float32) * 0.7):
        [got] = mask_regions(variant, scale=2)
        assert shapely.equals_exact(got, expected, tolerance=0)
