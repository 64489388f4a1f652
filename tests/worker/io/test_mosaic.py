"""Reading every supported mosaic kind from real files, and refusing bad ones clearly."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import pyvips
from PIL import Image

from worker.errors import MosaicTooLarge, UnreadableMosaic, UnsupportedMosaic
from worker.io.mosaic import VivaBlockLayout, open_mosaic, probe, verify_readable

LIMIT = 10**8


def ramp(h: int = 60, w: int = 80) -> np.ndarray:
    return (np.add.outer(np.arange(h), np.arange(w)) % 256).astype(np.uint8)


def write_vips(path: Path, array: np.ndarray, **save: object) -> Path:
    image = pyvips.Image.new_from_array(array)
    if array.dtype == np.uint16:
        image = image.copy(interpretation="grey16")
    image.write_to_file(str(path), **save)
    return path


def pixels(path: Path, **kw: object) -> np.ndarray:
    return np.asarray(open_mosaic(path, max_pixels=LIMIT, **kw).image.numpy())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "save"),
    [
        ("striped.tif", {}),
        ("tiled.tif", {"tile": True, "tile_width": 16, "tile_height": 16}),
        ("big.tif", {"bigtiff": True, "tile": True}),
        ("plain.png", {}),
    ],
)
def test_lossless_8bit_formats_read_exactly(tmp_path: Path, name: str, save: dict[str, object]) -> None:
    src = ramp()
    path = write_vips(tmp_path / name, src, **save)
    header = probe(path, max_pixels=LIMIT)
    assert (header.width, header.height, header.bands, header.bit_depth) == (80, 60, 1, 8)
    np.testing.assert_array_equal(pixels(path), src)


@pytest.mark.parametrize("name", ["deep.tif", "deep.png"])
def test_16bit_maps_linearly_to_8bit(tmp_path: Path, name: str) -> None:
    src16 = (ramp().astype(np.uint16) * 257).astype(np.uint16)
    src16[0, 0] = 65535
    path = write_vips(tmp_path / name, src16)
    assert probe(path, max_pixels=LIMIT).bit_depth == 16
    mosaic = open_mosaic(path, max_pixels=LIMIT)
    assert any("value/257" in n for n in mosaic.notes)
    np.testing.assert_array_equal(np.asarray(mosaic.image.numpy()), np.rint(src16 / 257).astype(np.uint8))


def test_jpeg_reads_close_to_source(tmp_path: Path) -> None:
    src = np.full((64, 64), 120, dtype=np.uint8)
    path = write_vips(tmp_path / "m.jpg", src)
    assert probe(path, max_pixels=LIMIT).format == "jpeg"
    assert np.abs(pixels(path).astype(int) - 120).max() <= 2


def test_rgb_becomes_luminance_and_says_so(tmp_path: Path) -> None:
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    rgb[..., 1] = 200
    path = write_vips(tmp_path / "rgb.png", rgb)
    mosaic = open_mosaic(path, max_pixels=LIMIT)
    assert mosaic.image.bands == 1
    assert any("luminance" in n for n in mosaic.notes)
    assert int(np.asarray(mosaic.image.numpy())[0, 0]) == round(0.7152 * 200)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_bmp_is_decoded_without_libvips(tmp_path: Path, mode: str) -> None:
    src = ramp()
    path = tmp_path / "m.bmp"
    Image.fromarray(src).convert(mode).save(path)
    header = probe(path, max_pixels=LIMIT)
    assert header.format == "bmp"
    assert header.bands == (1 if mode == "L" else 3)
    np.testing.assert_array_equal(pixels(path), src)


def test_real_16bit_rcm_tile(real_tile: Path) -> None:
    header = probe(real_tile, max_pixels=LIMIT)
    assert (header.width, header.height, header.bit_depth, header.format) == (1024, 1024, 16, "png")
    image = pixels(real_tile)
    assert image.dtype == np.uint8 and image.shape == (1024, 1024)
    assert image.std() > 5  # real tissue texture, not a flat image


def make_vivablock(folder: Path, *, n: int, fov: int = 40, caption: int = 8) -> Path:
    folder.mkdir()
    for i in range(n):
        tile = np.full((fov + caption, fov), 10 * (i + 1), dtype=np.uint8)
        tile[fov:] = 255  # caption strip
        Image.fromarray(tile).save(folder / f"v{i:07d}.bmp")
    return folder


def test_vivablock_square_grid_in_raster_order(tmp_path: Path) -> None:
    folder = make_vivablock(tmp_path / "VivaBlock1", n=4)
    header = probe(folder, max_pixels=LIMIT)
    assert (header.width, header.height, header.format) == (80, 80, "vivablock")
    image = pixels(folder)
    assert image[0, 0] == 10 and image[0, 79] == 20 and image[79, 0] == 30 and image[79, 79] == 40
    assert (image != 255).all()  # caption strips cropped


def test_vivablock_serpentine_and_explicit_columns(tmp_path: Path) -> None:
    folder = make_vivablock(tmp_path / "VivaBlock2", n=6)
    with pytest.raises(UnsupportedMosaic, match="square grid"):
        probe(folder, max_pixels=LIMIT)
    image = pixels(folder, layout=VivaBlockLayout(cols=3, serpentine=True))
    assert image.shape == (80, 120)
    assert [int(image[0, 40 * c]) for c in range(3)] == [10, 20, 30]
    assert [int(image[40, 40 * c]) for c in range(3)] == [60, 50, 40]


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, type[Exception], str]]:
    text = tmp_path / "notes.tif"
    text.write_text("this is not an image\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = write_vips(tmp_path / "good.png", np.random.default_rng(0).integers(0, 255, (300, 300), np.uint8))
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    five = tmp_path / "five.tif"
    pyvips.Image.new_from_array(ramp()).bandjoin([pyvips.Image.new_from_array(ramp())] * 4).tiffsave(
        str(five)
    )
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(100000, 100000))
    return {
        "text named .tif": (text, UnreadableMosaic, "not an image"),
        "zero-sized": (empty, UnreadableMosaic, "empty"),
        "truncated": (truncated, UnreadableMosaic, "truncated"),
        "5-band tiff": (five, UnsupportedMosaic, "5 bands"),
        "header claims 100000 x 100000": (bomb, MosaicTooLarge, "exceeds the limit"),
    }


def test_each_bad_file_gets_its_clear_error(tmp_path: Path) -> None:
    for label, (path, error, words) in bad_files(tmp_path).items():
        with pytest.raises(error, match=words) as info:
            verify_readable(path, max_pixels=LIMIT)
        assert str(path) in str(info.value), label


def test_pixel_limit_is_checked_from_the_header(tmp_path: Path) -> None:
    path = write_vips(tmp_path / "m.png", ramp())
    with pytest.raises(MosaicTooLarge):
        probe(path, max_pixels=80 * 60 - 1)
    assert probe(path, max_pixels=80 * 60).width == 80
