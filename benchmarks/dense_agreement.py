"""Dense mode against the paper's exact windows at the same step (the output stride, 32 px).

    .venv/bin/python -m benchmarks.dense_agreement --model models/zoo/phantom-b2 --mosaics data/phantoms \
        [--split test] [--max-mosaics 2] [--sigmas none 5] [--threads 1] [--json out.json]

For each mosaic of the split, the exact heat maps (windows every 32 px, ``rcmseg segment --step 32``) and
the dense ones (``--mode dense``: see ``VARIANTS``) are computed for every sigma (in units of the output
stride); reported per sigma: pooled pixel AUC and best Dice of each, their differences from
exact, the largest and mean absolute heat map difference, and the time of each (one pass serves every sigma
in every mode) with the speed ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks import common
from models.method import PLAIN_AVERAGING, Sigma
from models.metrics.dice import dice_sweep
from models.metrics.roc import mosaic_histogram
from worker.datasets.annotated import AnnotatedMosaic, labels_for
from worker.engine.dense_tiles import STRIDE, DenseOptions, DenseWindows, cam_grid, pad_to_cells
from worker.engine.device import default_batch_size
from worker.engine.network_pass import WindowStats
from worker.engine.windows import WindowGrid
from worker.evaluation.data import load_split
from worker.evaluation.sweep import output_stride, sweep_heatmaps
from worker.io.checkpoint import LoadedModel, load_model
from worker.io.mosaic import open_mosaic
from worker.io.processing import processing_image
from worker.params import SegmentParams

VARIANTS = {
    "dense": DenseOptions(),
    "dense_crops_128": DenseOptions(prob_step=128, prob_offset=False),
    "dense_before": DenseOptions(tile_cells=32, prob_step=64, prob_offset=False),
    "dense_feature_logits": DenseOptions(prob_step=None),
}
"""The default (48-cell tiles, the crops' corrections every 128 px, interpolated), the crops' own logits
every 128 px, the default before (32-cell tiles, the crops' logits every 64 px), no crops."""
MODES = ("exact", *VARIANTS)
SPEED_STEP = 25
"""The exact step dense mode's speed target is measured against (timed, one sigma)."""


def parse_args() -> argparse.Namespace:
    parser = common.parser(__doc__)
    common.add_split_options(parser)
    parser.add_argument("--sigmas", nargs="+", default=["none", "5"])
    common.add_threads_option(parser)
    common.add_json_option(parser)
    return parser.parse_args()


class Tally:
    """Per mode and sigma: the mosaics' histograms, heat map differences from exact, and seconds."""

    def __init__(self, sigmas: int) -> None:
        self.hists: dict[str, list] = {f"{mode}/{i}": [] for mode in MODES for i in range(sigmas)}
        self.diffs: dict[str, list[list[tuple[float, float, float]]]] = {
            v: [[] for _ in range(sigmas)] for v in VARIANTS
        }
        self.seconds = dict.fromkeys((*MODES, f"exact_step{SPEED_STEP}"), 0.0)


def dense_heats(
    image: np.ndarray, model: LoadedModel, sigmas: list[Sigma], options: DenseOptions
) -> list[np.ndarray]:
    """Dense mode's heat maps for each sigma with ``options`` (the crop step included)."""
    padded = pad_to_cells(image, model.card.window)
    cam = cam_grid(padded, model, dtype=torch.float32, options=options)
    windows = DenseWindows.from_cam_grid(
        cam,
        padded,
        model,
        image.shape,
        options=options,
        batch_size=default_batch_size(torch.device("cpu"), model.card.window),
    )
    return [windows.heat(sigma) for sigma in sigmas]


def compare_mosaic(
    mosaic: AnnotatedMosaic, model: LoadedModel, sigmas: list[Sigma], tally: Tally
) -> dict[str, Any]:
    """Exact and both dense variants on one mosaic, added to ``tally``; returns the mosaic's times."""
    card = model.card
    opened = open_mosaic(mosaic.image, max_pixels=1 << 31)
    k = mosaic.downsample(card.pixel_size_um)
    image = processing_image(opened, k, budget_bytes=1 << 30, workdir=Path("."))
    labels = labels_for(mosaic, k, (opened.header.height, opened.header.width))
    grid = WindowGrid(height=image.shape[0], width=image.shape[1], window=card.window, step=STRIDE)
    t0 = time.perf_counter()
    exact = sweep_heatmaps(
        image,
        model,
        grid=grid,
        params=SegmentParams(step=STRIDE),
        sigmas=sigmas,
        batch_size=default_batch_size(torch.device("cpu"), card.window),
        budget_bytes=1 << 30,
        workdir=Path("."),
        stats=WindowStats(),
    )
    t_exact = time.perf_counter() - t0
    tally.seconds["exact"] += t_exact
    for i, e in enumerate(exact):
        tally.hists[f"exact/{i}"].append(mosaic_histogram(e, labels))
    labelled = labels > 0
    times = {"mosaic": mosaic.name, "windows": grid.count, "exact_s": round(t_exact, 1)}
    t0 = time.perf_counter()
    sweep_heatmaps(
        image,
        model,
        grid=replace(grid, step=SPEED_STEP),
        params=SegmentParams(step=SPEED_STEP),
        sigmas=sigmas[:1],
        batch_size=default_batch_size(torch.device("cpu"), card.window),
        budget_bytes=1 << 30,
        workdir=Path("."),
        stats=WindowStats(),
    )
    t_speed = time.perf_counter() - t0
    tally.seconds[f"exact_step{SPEED_STEP}"] += t_speed
    times[f"exact_step{SPEED_STEP}_s"] = round(t_speed, 1)
    for variant, options in VARIANTS.items():
        t0 = time.perf_counter()
        dense = dense_heats(image, model, sigmas, options)
        elapsed = time.perf_counter() - t0
        tally.seconds[variant] += elapsed
        times[f"{variant}_s"] = round(elapsed, 1)
        for i, (e, d) in enumerate(zip(exact, dense, strict=True)):
            tally.hists[f"{variant}/{i}"].append(mosaic_histogram(d, labels))
            diff = np.abs(np.asarray(e) - np.asarray(d))
            tally.diffs[variant][i].append(
                (float(diff.max()), float(diff.mean()), float(diff[labelled].mean()))
            )
    return times


def sigma_row(i: int, units: float | None, sigma: Sigma, tally: Tally) -> dict[str, Any]:
    """One sigma's pooled AUC and best Dice per mode, and each dense variant's distance from exact."""
    row: dict[str, Any] = {"sigma_units": units, "sigma_px": sigma}
    for mode in MODES:
        parts = tally.hists[f"{mode}/{i}"]
        pooled = sum(parts[1:], parts[0].copy())
        sweep = dice_sweep(pooled)
        row[f"{mode}_auc"] = pooled.auc()
        row[f"{mode}_best_dice"] = sweep.best_dice
        row[f"{mode}_best_threshold"] = sweep.best_threshold
    for variant in VARIANTS:
        diffs = tally.diffs[variant][i]
        row[f"{variant}_delta_auc"] = row[f"{variant}_auc"] - row["exact_auc"]
        row[f"{variant}_delta_best_dice"] = row[f"{variant}_best_dice"] - row["exact_best_dice"]
        row[f"{variant}_max_abs_diff"] = max(d[0] for d in diffs)
        row[f"{variant}_mean_abs_diff"] = float(np.mean([d[1] for d in diffs]))
        row[f"{variant}_mean_abs_diff_labelled"] = float(np.mean([d[2] for d in diffs]))
    return row


def main() -> int:
    args = parse_args()
    common.prepare("cpu", threads=args.threads)
    model = load_model(args.model, "cpu")
    stride = output_stride(model)
    units = [None if s.lower() == "none" else float(s) for s in args.sigmas]
    sigmas: list[Sigma] = [PLAIN_AVERAGING if u is None else u * stride for u in units]
    split = load_split(args.mosaics, split=args.split, patches=args.patches, max_mosaics=args.max_mosaics)
    tally = Tally(len(sigmas))
    per_mosaic = []
    for mosaic in split.mosaics:
        per_mosaic.append(compare_mosaic(mosaic, model, sigmas, tally))
        print(json.dumps(per_mosaic[-1]), file=sys.stderr)
    seconds = tally.seconds
    result = {
        "model": model.card.name,
        "split": split.name,
        "mosaics": per_mosaic,
        "step_px": STRIDE,
        "sigma_unit_px": stride,
        "torch_threads": torch.get_num_threads(),
        "seconds": {mode: round(t, 1) for mode, t in seconds.items()},
        "speed_ratio": {v: round(seconds["exact"] / seconds[v], 1) for v in VARIANTS if seconds[v]},
        f"speed_ratio_vs_step{SPEED_STEP}": {
            v: round(seconds[f"exact_step{SPEED_STEP}"] / seconds[v], 1) for v in VARIANTS if seconds[v]
        },
        "sigmas": [sigma_row(i, u, sigmas[i], tally) for i, u in enumerate(units)],
    }
    common.write_result(result, args.json, benchmark="dense-agreement")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
