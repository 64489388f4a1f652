"""Reading DICOM mosaics: every layout and decodable transfer syntax gives the pixels it was built from, with
the pixel size the file records; objects that are not mosaics are refused by SOP class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import MPEG2MPML, UID, JPEG2000Lossless, JPEGLSLossless, RLELossless

from tests.worker.io.dicom.objects import (
    confocal_single,
    confocal_tiled,
    ct_image,
    jpeg_baseline,
    phantom_pixels,
    save,
    wsm,
)
from worker.errors import UnreadableMosaic, UnsupportedMosaic
from worker.io.dicom.read import describe
from worker.io.dicom.segmentation import SegAlgorithm, write_segmentations
from worker.io.mosaic import input_sha256, open_mosaic, probe, verify_readable

LIMIT = 10**8


def _read(path: Path) -> np.ndarray:
    mosaic = open_mosaic(path, max_pixels=LIMIT)
    return np.asarray(mosaic.image.numpy()).reshape(mosaic.image.height, mosaic.image.width)


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (lambda a: confocal_single(a), "shared Pixel Measures"),
        (lambda a: confocal_single(a, spacing="per-frame"), "first frame's Pixel Measures"),
        (lambda a: confocal_single(a, spacing="top"), "top-level attribute"),
        (lambda a: confocal_tiled(a), "tiled full"),
        (lambda a: confocal_tiled(a, sparse=True), "tiled sparse"),
        (lambda a: wsm(a), "VL Whole Slide Microscopy"),
    ],
    ids=["single-shared", "single-per-frame", "single-top", "tiled-full", "tiled-sparse", "wsm"],
)
def test_each_layout_reads_back_exactly(tmp_path: Path, build, words: str) -> None:  # type: ignore[no-untyped-def]
    pixels = phantom_pixels()
    path = save(build(pixels), tmp_path / "m.dcm")
    header = probe(path, max_pixels=LIMIT)
    assert (header.format, header.width, header.height, header.pixel_size_um) == ("dicom", 420, 300, 0.5)
    assert np.array_equal(_read(path), pixels)
    assert any(words in note for note in open_mosaic(path, max_pixels=LIMIT).notes)


@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda s: s.name)
def test_lossless_compressed_frames_decode_exactly(tmp_path: Path, syntax: UID) -> None:
    pixels = phantom_pixels()
    ds = wsm(pixels)
    ds.compress(syntax)
    path = save(ds, tmp_path / "m.dcm")
    assert np.array_equal(_read(path), pixels)
    assert syntax.name in open_mosaic(path, max_pixels=LIMIT).notes[0]


def test_jpeg_baseline_frames_decode_close_to_the_source(tmp_path: Path) -> None:
    pixels = np.tile(np.linspace(0, 255, 420, dtype=np.uint8), (300, 1))  # smooth: JPEG keeps it well
    path = save(jpeg_baseline(wsm(pixels)), tmp_path / "m.dcm")
    assert np.abs(_read(path).astype(int) - pixels).max() <= 8


def test_a_transfer_syntax_without_a_decoder_is_refused_by_name(tmp_path: Path) -> None:
    path = save(jpeg_baseline(wsm(phantom_pixels())), tmp_path / "m.dcm")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML  # a video syntax no image decoder reads
    ds.save_as(path)
    with pytest.raises(
        UnsupportedMosaic, match=r"MPEG2 .*1\.2\.840\.10008\.1\.2\.4\.100\).*no installed decoder"
    ):
        probe(path, max_pixels=LIMIT)


def test_objects_that_are_not_mosaics_are_refused_by_sop_class(tmp_path: Path) -> None:
    source = save(wsm(phantom_pixels()), tmp_path / "source.dcm")
    heat = np.full((75, 105), 0.7, dtype=np.float32)
    algorithm = SegAlgorithm(
        name="m", version="0", weights_sha256="0" * 64, parameters={}, intended_use="", result_key="k"
    )
    write_segmentations(
        tmp_path, source_path=source, heat=heat, mask=heat > 0.5, downsample=4, algorithm=algorithm
    )
    with pytest.raises(
        UnsupportedMosaic,
        match=r"Segmentation Storage object \(SOP class 1\.2\.840\.10008\.5\.1\.4\.1\.1\.66\.4\)",
    ):
        probe(tmp_path / "segmentation.dcm", max_pixels=LIMIT)
    ct = save(ct_image(), tmp_path / "ct.dcm")
    with pytest.raises(
        UnsupportedMosaic, match=r"CT Image Storage object \(SOP class 1\.2\.840\.10008\.5\.1\.4\.1\.1\.2\)"
    ):
        probe(ct, max_pixels=LIMIT)


def test_a_series_folder_reads_its_base_level(tmp_path: Path) -> None:
    pixels = phantom_pixels()
    folder = tmp_path / "series"
    base = wsm(pixels)
    thumbnail = wsm(pixels[::4, ::4].copy(), key="thumb")
    thumbnail.SeriesInstanceUID = base.SeriesInstanceUID
    thumbnail.ImageType = ["DERIVED", "PRIMARY", "THUMBNAIL", "RESAMPLED"]
    level = wsm(pixels[::2, ::2].copy(), key="level")
    level.SeriesInstanceUID = base.SeriesInstanceUID
    save(thumbnail, folder / "a.dcm")
    save(level, folder / "b.dcm")
    save(base, folder / "c.dcm")
    assert describe(folder).path == folder / "c.dcm"
    assert np.array_equal(_read(folder), pixels)
    assert input_sha256(folder) == input_sha256(folder / "c.dcm")


def test_a_folder_of_two_series_is_refused(tmp_path: Path) -> None:
    save(wsm(phantom_pixels()), tmp_path / "s" / "a.dcm")
    save(wsm(phantom_pixels(seed=1), key="other"), tmp_path / "s" / "b.dcm")
    with pytest.raises(UnsupportedMosaic, match="2 series"):
        probe(tmp_path / "s", max_pixels=LIMIT)


def test_the_pixel_limit_is_checked_from_the_header(tmp_path: Path) -> None:
    path = save(wsm(phantom_pixels()), tmp_path / "m.dcm")
    with pytest.raises(ValueError, match="exceeds the limit"):
        probe(path, max_pixels=1000)


@pytest.mark.parametrize("build", [wsm, lambda a: jpeg_baseline(wsm(a))], ids=["raw", "jpeg"])
def test_truncated_pixel_data_is_named(tmp_path: Path, build) -> None:  # type: ignore[no-untyped-def]
    path = save(build(phantom_pixels()), tmp_path / "m.dcm")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 20000])
    with pytest.raises(UnreadableMosaic, match="truncated"):
        verify_readable(path, max_pixels=LIMIT)


def test_a_truncated_header_is_named(tmp_path: Path) -> None:
    path = save(wsm(phantom_pixels()), tmp_path / "m.dcm")
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(UnreadableMosaic, match="header is damaged or truncated"):
        probe(path, max_pixels=LIMIT)


def test_colour_and_16_bit_frames_become_8_bit_grey(tmp_path: Path) -> None:
    grey = phantom_pixels()
    colour = wsm(grey)
    rgb = np.stack([grey, grey, grey], axis=-1)
    tiles = np.frombuffer(colour.PixelData, dtype=np.uint8).reshape(-1, 128, 128)
    colour.PixelData = np.repeat(tiles[..., None], 3, axis=-1).tobytes()
    colour.SamplesPerPixel, colour.PhotometricInterpretation, colour.PlanarConfiguration = 3, "RGB", 0
    mosaic = open_mosaic(save(colour, tmp_path / "rgb.dcm"), max_pixels=LIMIT)
    assert mosaic.header.bands == 3 and any("luminance" in note for note in mosaic.notes)
    assert np.abs(_read(tmp_path / "rgb.dcm").astype(int) - rgb[..., 0]).max() <= 1
    deep = confocal_single(grey)
    deep.BitsAllocated, deep.BitsStored, deep.HighBit = 16, 16, 15
    deep.PixelData = (grey.astype(np.uint16) * 257).tobytes()
    mosaic = open_mosaic(save(deep, tmp_path / "deep.dcm"), max_pixels=LIMIT)
    assert mosaic.header.bit_depth == 16 and np.array_equal(_read(tmp_path / "deep.dcm"), grey)


def test_frames_far_beyond_the_total_pixel_matrix_are_refused_before_decoding(tmp_path: Path) -> None:
    """A few kilobytes of compressed frames can claim far more pixels than the matrix the limit checked."""
    few = wsm(phantom_pixels())
    few.TotalPixelMatrixColumns, few.TotalPixelMatrixRows = 64, 64  # 12 frames where one tile covers it
    with pytest.raises(UnsupportedMosaic, match="12 frames where a 64 x 64 px matrix"):
        probe(save(few, tmp_path / "frames.dcm"), max_pixels=LIMIT)
    large = wsm(phantom_pixels())
    large.Rows = 5000  # each frame claims 5000 rows of a 300-row matrix
    with pytest.raises(UnsupportedMosaic, match="frames of 128 x 5000 px for a 420 x 300 px"):
        probe(save(large, tmp_path / "large.dcm"), max_pixels=LIMIT)


def test_a_header_holding_nonsense_is_named_not_a_crash(tmp_path: Path) -> None:
    frames = save(wsm(phantom_pixels()), tmp_path / "frames.dcm")  # 12 tiles: Number of Frames "12"
    raw = frames.read_bytes()
    assert raw.count(b"\x28\x00\x08\x00IS\x02\x0012") == 1
    frames.write_bytes(raw.replace(b"\x28\x00\x08\x00IS\x02\x0012", b"\x28\x00\x08\x00IS\x02\x00x "))
    spacing = save(confocal_single(phantom_pixels(), spacing="top"), tmp_path / "spacing.dcm")
    raw = spacing.read_bytes()
    assert raw.count(b"0.0005\\0.0005") == 1
    spacing.write_bytes(raw.replace(b"0.0005\\0.0005", b"abcdef\\abcdef"))
    for path in (frames, spacing):
        with pytest.raises(UnreadableMosaic, match="header is damaged or truncated"):
            probe(path, max_pixels=LIMIT)
