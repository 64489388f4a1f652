"""DICOM Segmentations of a result: valid objects (dciodvfy) on the source's grid, the binary segment equal
to the mask replicated onto it, the probability within one step of 1/255, the model named, UIDs stable."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from tests.worker.io.dicom.objects import (
    confocal_single,
    confocal_tiled,
    dciodvfy_errors,
    phantom_pixels,
    save,
    wsm,
)
from worker.io.dicom.segmentation import SegAlgorithm, on_source_grid, write_segmentations

K = 4
ALGORITHM = SegAlgorithm(
    name="random-test",
    version="0.1.0",
    weights_sha256="ab" * 32,
    parameters={"threshold": "0.5"},
    intended_use="research only, not for diagnosis",
    result_key="0123456789abcdef",
)


def _heat(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    heat = rng.random((shape[0] // K, shape[1] // K)).astype(np.float32)
    return heat, ((heat >= 0.5) * 255).astype(np.uint8)


@pytest.mark.parametrize(
    "build",
    [wsm, confocal_tiled, lambda a: confocal_tiled(a, sparse=True), confocal_single],
    ids=["wsm", "confocal-tiled-full", "confocal-tiled-sparse", "confocal-single"],
)
def test_both_segmentations_lie_on_the_source_grid(tmp_path: Path, build) -> None:  # type: ignore[no-untyped-def]
    pixels = phantom_pixels()
    source = save(build(pixels), tmp_path / "source.dcm")
    heat, mask = _heat(pixels.shape)
    result = write_segmentations(
        tmp_path, source_path=source, heat=heat, mask=mask, downsample=K, algorithm=ALGORITHM
    )
    src = pydicom.dcmread(source)
    expected = on_source_grid(mask > 0, K, pixels.shape)
    assert expected[: heat.shape[0] * K, : heat.shape[1] * K].sum() == (mask > 0).sum() * K * K
    for name, kind in (("segmentation.dcm", "BINARY"), ("probability.dcm", "FRACTIONAL")):
        path = tmp_path / name
        assert dciodvfy_errors(path) == [], name
        seg = hd.seg.segread(path)
        assert seg.SegmentationType == kind and result.files[name] == seg.SOPInstanceUID
        syntax = "1.2.840.10008.1.2.1" if kind == "BINARY" else "1.2.840.10008.1.2.4.80"  # JPEG-LS lossless
        assert seg.file_meta.TransferSyntaxUID == syntax
        assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.SeriesInstanceUID != src.SeriesInstanceUID
        ref = seg.ReferencedSeriesSequence[0]
        assert ref.SeriesInstanceUID == src.SeriesInstanceUID
        assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
        assert ref.ReferencedInstanceSequence[0].ReferencedSOPClassUID == src.SOPClassUID
        segment = seg.SegmentSequence[0]
        algorithm = segment.SegmentationAlgorithmIdentificationSequence[0]
        assert (segment.SegmentLabel, algorithm.AlgorithmName) == ("aspecific", "random-test")
        assert "ab" * 32 in algorithm.AlgorithmParameters
        assert "not for diagnosis" in seg.SeriesDescription
        values = seg.get_total_pixel_matrix(combine_segments=False, rescale_fractional=True)[..., 0]
        assert values.shape == pixels.shape
        if kind == "BINARY":
            assert np.array_equal(values, expected)
        else:
            assert np.abs(values - on_source_grid(heat, K, pixels.shape)).max() <= 0.5 / 255 + 1e-6


def test_the_uids_follow_the_result_key(tmp_path: Path) -> None:
    pixels = phantom_pixels()
    source = save(wsm(pixels), tmp_path / "source.dcm")
    heat, mask = _heat(pixels.shape)
    runs = []
    for key in ("one", "one", "two"):
        out = tmp_path / key
        out.mkdir(exist_ok=True)
        algorithm = SegAlgorithm(**{**ALGORITHM.__dict__, "result_key": key})
        runs.append(
            write_segmentations(
                out, source_path=source, heat=heat, mask=mask, downsample=K, algorithm=algorithm
            )
        )
    assert runs[0] == runs[1] and set(runs[0].files.values()).isdisjoint(runs[2].files.values())


def test_nearest_replication_keeps_blocks_and_zero_borders() -> None:
    values = np.array([[1, 2], [3, 4]], dtype=np.uint8)
    grid = on_source_grid(values, 2, (5, 5))
    assert grid[:4, :4].tolist() == [[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]]
    assert grid[4].sum() == grid[:, 4].sum() == 0
