"""Cost of a sigma sweep through the restitch path, against one plain run and against fresh runs per sigma.

    .venv/bin/python -m benchmarks.restitch_sweep [--model DIR] [--mosaic PATH] [--size 1024] [--step 50]
        [--cam cam] [--threads 1] [--repeat 2] [--json out.json]

Without ``--model`` a random-weight EfficientNet-B2 (256 px windows) is used; without ``--mosaic`` a speckled
texture of ``--size`` px is generated (processing resolution, downsample 1). Timed, alternately ``--repeat``
times, fastest kept:

- ``single``: ``run_windows`` + ``stitch_windows`` for one sigma (what ``rcmseg segment`` does);
- ``sweep``: ``sweep_heatmaps`` for the paper's nine sigmas (none, 1, 2.5, 5 ... 10 x 32 px), one pass over
  the windows feeding nine stitchers, as ``rcmseg evaluate`` does.

Fresh runs per sigma would cost nine times ``single``. The sweep's map for the single run's sigma is checked
equal to the single run's. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks import common
from models.method import PLAIN_AVERAGING, Sigma
from worker.engine.accumulate import stitch_windows
from worker.engine.device import default_batch_size
from worker.engine.network_pass import WindowStats, run_windows
from worker.engine.windows import WindowGrid
from worker.evaluation.sweep import output_stride, sweep_heatmaps
from worker.io.checkpoint import LoadedModel, load_model
from worker.io.mosaic import open_mosaic
from worker.params import SegmentParams

SIGMA_UNITS = (None, 1.0, 2.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)


def parse_args() -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--model", type=Path, default=None, help="model folder (default: random B2)")
    parser.add_argument("--mosaic", type=Path, default=None, help="a mosaic at processing resolution")
    parser.add_argument("--size", type=int, default=1024, help="generated mosaic side in px")
    parser.add_argument("--step", type=int, default=50)
    parser.add_argument("--cam", choices=["cam", "scorecam"], default="cam")
    parser.add_argument("--scorecam-top-k", type=int, default=None)
    common.add_threads_option(parser)
    parser.add_argument("--repeat", type=int, default=2)
    common.add_json_option(parser)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    return args


def texture(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    base = rng.normal(110, 35, (size, size)) + 50 * np.sin(xx / 23.0) * np.cos(yy / 31.0)
    return np.clip(base, 1, 255).astype(np.uint8)


@dataclass(frozen=True)
class Timed:
    """Both paths timed: every run's seconds, the last run's stage seconds, and their maps' difference."""

    grid: WindowGrid
    sigmas: int
    times: dict[str, list[float]]
    stage: dict[str, dict[str, float]]
    max_abs_diff: float


def time_both(
    image: np.ndarray, model: LoadedModel, params: SegmentParams, *, repeat: int, work: Path
) -> Timed:
    """``single`` and ``sweep`` alternately, ``repeat`` times each."""
    window = model.card.window
    stride = output_stride(model)
    sigmas: list[Sigma] = [PLAIN_AVERAGING if u is None else u * stride for u in SIGMA_UNITS]
    grid = WindowGrid(height=image.shape[0], width=image.shape[1], window=window, step=params.step)
    batch = default_batch_size(torch.device("cpu"), window)
    single_sigma = 5.0 * stride
    times: dict[str, list[float]] = {"single": [], "sweep": []}
    stage: dict[str, dict[str, float]] = {}
    single_heat = sweep_heat = np.zeros(0)
    for _ in range(repeat):
        stats = WindowStats()
        t0 = time.perf_counter()
        batches = run_windows(image, model, grid=grid, params=params, batch_size=batch, stats=stats)
        single_heat, _ = stitch_windows(
            batches, grid=grid, sigma=single_sigma, budget_bytes=1 << 30, workdir=work, stats=stats
        )
        times["single"].append(time.perf_counter() - t0)
        stage["single"] = dict(stats.seconds)

        stats = WindowStats()
        t0 = time.perf_counter()
        heats = sweep_heatmaps(
            image,
            model,
            grid=grid,
            params=params,
            sigmas=sigmas,
            batch_size=batch,
            budget_bytes=1 << 30,
            workdir=work,
            stats=stats,
        )
        times["sweep"].append(time.perf_counter() - t0)
        stage["sweep"] = dict(stats.seconds)
        sweep_heat = heats[sigmas.index(single_sigma)]
    diff = float(np.abs(np.asarray(single_heat) - np.asarray(sweep_heat)).max())
    return Timed(grid=grid, sigmas=len(sigmas), times=times, stage=stage, max_abs_diff=diff)


def main() -> int:
    args = parse_args()
    common.prepare("cpu", threads=args.threads)
    with tempfile.TemporaryDirectory(prefix="rcmseg-restitch-") as tmp:
        work = Path(tmp)
        if args.model is None:
            from tests.conftest import make_model_dir  # only here: it needs pytest

            model_dir = make_model_dir(work / "model", arch="efficientnet_b2", window=256)
        else:
            model_dir = args.model
        model = load_model(model_dir, "cpu")
        if args.mosaic is not None:
            image = np.asarray(open_mosaic(args.mosaic, max_pixels=1 << 31).image.numpy(), dtype=np.uint8)
        else:
            image = texture(args.size)
        params = SegmentParams(step=args.step, cam=args.cam, scorecam_top_k=args.scorecam_top_k)
        run = time_both(image, model, params, repeat=args.repeat, work=work)
        times, stage, n_sigmas = run.times, run.stage, run.sigmas
        single, sweep = min(times["single"]), min(times["sweep"])
        result = {
            "model": model.card.name,
            "arch": model.card.arch,
            "cam": args.cam,
            "image": list(image.shape),
            "step": args.step,
            "windows": run.grid.count,
            "sigmas": n_sigmas,
            "torch_threads": torch.get_num_threads(),
            "single_s": round(single, 2),
            "sweep_s": round(sweep, 2),
            "sweep_over_single": round(sweep / single, 3),
            "fresh_runs_s_estimate": round(n_sigmas * single, 1),
            "sweep_over_fresh_runs": round(sweep / (n_sigmas * single), 3),
            "stitch_s": {k: round(v["stitch"], 2) for k, v in stage.items()},
            "network_s": {k: round(v["network"], 2) for k, v in stage.items()},
            "all_times_s": {k: [round(t, 2) for t in v] for k, v in times.items()},
            "max_abs_diff_same_sigma": run.max_abs_diff,
        }
    common.write_result(result, args.json, benchmark="restitch-sweep")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
