"""A mosaic shared out in bands: the merged heatmap equals the one-run heatmap (CAM, ScoreCAM, dense)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker.engine.bands import bands_for, compute_band, merge_bands, plan_bands, write_band
from worker.engine.options import RunOptions
from worker.engine.pipeline import heat_of
from worker.engine.windows import WindowGrid
from worker.io.checkpoint import load_model
from worker.params import SegmentParams


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
        {"step": 40, "sigma": None},
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
    # dense mode splits rows of 1024 px tiles: it needs a taller image for three bands
    shape = (2100, 100) if values.get("mode") == "dense" else (300, 170)
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
        write_band(tmp_path / "parts", band, arrays, counts)
    heat, merged_covered, merged = merge_bands(tmp_path / "parts", parts, image, model, params)
    np.testing.assert_allclose(heat, one, atol=1e-6, rtol=0)
    assert merged_covered == covered
    assert (merged.total, merged.skipped) == (stats.total, stats.skipped)
    assert merged.max_prob == pytest.approx(stats.max_prob, abs=1e-6)
    if params.cam == "scorecam":
        assert merged.scorecam is not None and stats.scorecam is not None
        ours, theirs = merged.scorecam.counts, stats.scorecam.counts
        assert (ours.windows, ours.masked_forwards) == (theirs.windows, theirs.masked_forwards)
    assert merged.parts is not None and [p["band"] for p in merged.parts] == list(range(parts))
