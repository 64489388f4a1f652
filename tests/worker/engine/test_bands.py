"""A mosaic shared out in bands: the merged heatmap equals the one-run heatmap (CAM, ScoreCAM, dense)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker.engine.bands import (
    BandOwner,
    band_written,
    bands_for,
    compute_band,
    merge_bands,
    plan_bands,
    write_band,
)
from worker.engine.device import RunOptions
from worker.engine.pipeline import heat_of
from worker.engine.windows import WindowGrid
from worker.errors import BandMismatch
from worker.io.checkpoint import load_model
from worker.params import SegmentParams


def OWNER(parallel: int, job_id: str = "job-a", key: str = "key-a") -> BandOwner:
    return BandOwner(job_id=job_id, parts_key=key, parallel=parallel)


def test_bands_cover_every_window_row_once() -> None:
    grid = WindowGrid(height=230, width=100, window=64, step=24)  # rows 0, 24, ..., 144 and 166
    bands = plan_bands(grid, 3)
    assert [(b.first, b.end) for b in bands] == [(0, 3), (3, 5), (5, 8)]
    assert [(b.y0, b.y1) for b in bands] == [(0, 112), (72, 160), (120, 230)]
    assert len(plan_bands(grid, 50)) == len(grid.ys)  # never more bands than window rows
    assert len(plan_bands(WindowGrid(height=40, width=40, window=64, step=8), 4)) == 1


@pytest.mark.parametrize(
    "values",
    [
        {"step": 24, "sigma": 12.0},
        {"step": 40, "sigma": "none"},
        {"step": 48, "cam": "scorecam", "scorecam_top_k": 4},
        {"mode": "dense", "sigma": 20.0},
    ],
    ids=["cam", "cam-plain-average", "scorecam-top-k", "dense"],
)
@pytest.mark.parametrize("parts", [2, 3])
def test_merged_bands_equal_one_run(
    tmp_path: Path, tiny_model_dir: Path, values: dict[str, object], parts: int
) -> None:
    model = load_model(tiny_model_dir)
    rng = np.random.default_rng(0)
    # dense mode splits rows of 1536 px tiles: it needs a taller image for three bands
    shape = (3100, 100) if values.get("mode") == "dense" else (300, 170)
    image = rng.integers(0, 255, shape, dtype=np.uint8)
    image[:40] = 0  # empty windows are skipped in every band alike
    params = SegmentParams(**values)  # type: ignore[arg-type]
    options = RunOptions(workdir=str(tmp_path))
    step = 32 if params.mode == "dense" else params.step
    grid = WindowGrid(height=shape[0], width=shape[1], window=64, step=step)
    one, covered, stats = heat_of(
        image, model, grid=grid, params=params, options=options, batch_size=8, scratch=tmp_path
    )
    bands = bands_for(image.shape, 64, params, parts)
    assert len(bands) == parts
    for band in reversed(bands):  # in any order
        arrays, counts = compute_band(
            image, model, band, params=params, options=options, batch_size=5, scratch=tmp_path
        )
        write_band(tmp_path / "parts", band, arrays, counts, owner=OWNER(parts))
    heat, merged_covered, merged = merge_bands(
        tmp_path / "parts", parts, image, model, params, owner=OWNER(parts)
    )
    np.testing.assert_allclose(heat, one, atol=1e-6, rtol=0)
    assert merged_covered == covered
    assert (merged.total, merged.skipped) == (stats.total, stats.skipped)
    assert merged.max_prob == pytest.approx(stats.max_prob, abs=1e-6)
    if params.cam == "scorecam":
        assert merged.scorecam is not None and stats.scorecam is not None
        ours, theirs = merged.scorecam.counts, stats.scorecam.counts
        assert (ours.windows, ours.masked_forwards) == (theirs.windows, theirs.masked_forwards)
    assert merged.parts is not None and [p["band"] for p in merged.parts] == list(range(parts))


@pytest.fixture
def written(tmp_path: Path, tiny_model_dir: Path) -> dict[str, object]:
    """A 300 x 170 image in three bands of job ``job-a``, every band written to ``parts``."""
    model = load_model(tiny_model_dir)
    image = np.random.default_rng(1).integers(1, 255, (300, 170), dtype=np.uint8)
    params = SegmentParams(step=24, sigma=12.0)
    options = RunOptions(workdir=str(tmp_path))
    folder = tmp_path / "parts"
    for band in bands_for(image.shape, 64, params, 3):
        arrays, counts = compute_band(
            image, model, band, params=params, options=options, batch_size=8, scratch=tmp_path
        )
        write_band(folder, band, arrays, counts, owner=OWNER(3))
    return {"model": model, "image": image, "params": params, "folder": folder, "options": options}


def test_a_band_file_says_whose_it_is(written: dict[str, object]) -> None:
    folder = written["folder"]
    assert isinstance(folder, Path)
    assert band_written(folder, 1, OWNER(3))
    assert not band_written(folder, 1, OWNER(3, job_id="job-b"))
    assert not band_written(folder, 1, OWNER(3, key="key-b"))
    assert not band_written(folder, 1, OWNER(2))
    assert not band_written(folder, 3, OWNER(3))


@pytest.mark.parametrize(
    "owner",
    [OWNER(3, job_id="job-b"), OWNER(3, key="key-b"), OWNER(2)],
    ids=["another-job", "other-parameters", "other-parallel"],
)
def test_the_merge_refuses_bands_of_another_job_or_run(written: dict[str, object], owner: BandOwner) -> None:
    with pytest.raises(BandMismatch) as caught:
        merge_bands(
            written["folder"],  # type: ignore[arg-type]
            owner.parallel,
            written["image"],  # type: ignore[arg-type]
            written["model"],  # type: ignore[arg-type]
            written["params"],  # type: ignore[arg-type]
            owner=owner,
        )
    assert caught.value.code == "band_mismatch"


def test_the_merge_refuses_a_band_whose_rows_are_not_the_ones_it_claims(
    written: dict[str, object], tmp_path: Path
) -> None:
    folder, image = written["folder"], written["image"]
    assert isinstance(folder, Path) and isinstance(image, np.ndarray)
    with np.load(folder / "band-2.npz") as data:
        arrays = {k: data[k] for k in data.files}
    arrays["num"], arrays["den"] = arrays["num"][:-10], arrays["den"][:-10]  # the bottom rows left out
    np.savez(folder / "band-2.npz", **arrays)
    with pytest.raises(BandMismatch, match="rows"):
        merge_bands(folder, 3, image, written["model"], written["params"], owner=OWNER(3))  # type: ignore[arg-type]


def test_the_merge_refuses_a_missing_band(written: dict[str, object]) -> None:
    folder = written["folder"]
    assert isinstance(folder, Path)
    (folder / "band-1.json").unlink()
    with pytest.raises(BandMismatch, match="band 1 of 3"):
        merge_bands(
            folder,
            3,
            written["image"],  # type: ignore[arg-type]
            written["model"],  # type: ignore[arg-type]
            written["params"],  # type: ignore[arg-type]
            owner=OWNER(3),
        )


def test_parallel_is_a_ceiling_on_the_bands(tmp_path: Path, tiny_model_dir: Path) -> None:
    """More bands asked than the image has window rows: as many bands as rows, merged to the one run."""
    model = load_model(tiny_model_dir)
    image = np.random.default_rng(2).integers(1, 255, (100, 120), dtype=np.uint8)  # window rows 0 and 36
    params = SegmentParams(step=64, sigma=12.0)
    options = RunOptions(workdir=str(tmp_path))
    bands = bands_for(image.shape, 64, params, 5)
    assert len(bands) == 2
    for band in bands:
        arrays, counts = compute_band(
            image, model, band, params=params, options=options, batch_size=8, scratch=tmp_path
        )
        write_band(tmp_path / "parts", band, arrays, counts, owner=OWNER(5))
    heat, _, stats = merge_bands(tmp_path / "parts", 5, image, model, params, owner=OWNER(5))
    grid = WindowGrid(height=100, width=120, window=64, step=64)
    one, _, _ = heat_of(
        image, model, grid=grid, params=params, options=options, batch_size=8, scratch=tmp_path
    )
    np.testing.assert_allclose(heat, one, atol=1e-6, rtol=0)
    assert stats.parts is not None and len(stats.parts) == 2
