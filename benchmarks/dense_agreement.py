"""Dense mode against the paper's exact windows at the same step (the output stride, 32 px).

    .venv/bin/python benchmarks/dense_agreement.py --model models/zoo/phantom-b2 --mosaics data/phantoms \
        [--split test] [--max-mosaics 2] [--sigmas none 5] [--threads 1] [--json out.json]

For each mosaic of the split, the exact heat maps (windows every 32 px, ``rcmseg segment --step 32``) and
the dense ones (``--mode dense``, with windowed and with global squeeze-excitation) are computed for every
sigma (in units of the output stride); reported per sigma: pooled pixel AUC and best Dice of each, their
differences from exact, the largest and mean absolute heat map difference, and the time of each (one pass
serves every sigma in every mode) with the speed ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--mosaics", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--patches", type=Path, default=None)
    parser.add_argument("--max-mosaics", type=int, default=2)
    parser.add_argument("--sigmas", nargs="+", default=["none", "5"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))

    import torch

    from models.metrics.dice import dice_sweep
    from models.metrics.roc import mosaic_histogram
    from worker.engine.bench import print_result
    from worker.engine.dense import STRIDE, DenseOptions
    from worker.engine.params import SegmentParams
    from worker.engine.pipeline import WindowStats, default_batch_size, processing_image
    from worker.engine.windows import WindowGrid
    from worker.evaluation.data import labels_for, load_split
    from worker.evaluation.sweep import dense_sweep, output_stride, sweep_heatmaps
    from worker.io.checkpoint import load_model
    from worker.io.mosaic import open_mosaic

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, "cpu")
    card = model.card
    stride = output_stride(model)
    units = [None if s.lower() == "none" else float(s) for s in args.sigmas]
    sigmas = [None if u is None else u * stride for u in units]
    split = load_split(args.mosaics, split=args.split, patches=args.patches, max_mosaics=args.max_mosaics)
    variants = {"dense": DenseOptions(windowed_se=True), "dense_global_se": DenseOptions(windowed_se=False)}
    modes = ("exact", *variants)
    hists: dict[str, list] = {f"{mode}/{i}": [] for mode in modes for i in range(len(sigmas))}
    diffs: dict[str, list[list[tuple[float, float, float]]]] = {v: [[] for _ in sigmas] for v in variants}
    seconds = dict.fromkeys(modes, 0.0)
    per_mosaic = []
    for mosaic in split.mosaics:
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
        seconds["exact"] += t_exact
        for i, e in enumerate(exact):
            hists[f"exact/{i}"].append(mosaic_histogram(e, labels))
        labelled = labels > 0
        times = {"mosaic": mosaic.name, "windows": grid.count, "exact_s": round(t_exact, 1)}
        for variant, options in variants.items():
            t0 = time.perf_counter()
            dense = dense_sweep(
                image, model, sigmas=sigmas, precision="fp32", stats=WindowStats(), options=options
            )
            elapsed = time.perf_counter() - t0
            seconds[variant] += elapsed
            times[f"{variant}_s"] = round(elapsed, 1)
            for i, (e, d) in enumerate(zip(exact, dense, strict=True)):
                hists[f"{variant}/{i}"].append(mosaic_histogram(d, labels))
                diff = np.abs(np.asarray(e) - np.asarray(d))
                diffs[variant][i].append(
                    (float(diff.max()), float(diff.mean()), float(diff[labelled].mean()))
                )
        per_mosaic.append(times)
        print(json.dumps(times), file=sys.stderr)

    rows = []
    for i, u in enumerate(units):
        row: dict[str, Any] = {"sigma_units": u, "sigma_px": sigmas[i]}
        for mode in modes:
            parts = hists[f"{mode}/{i}"]
            pooled = sum(parts[1:], parts[0].copy())
            sweep = dice_sweep(pooled)
            row[f"{mode}_auc"] = pooled.auc()
            row[f"{mode}_best_dice"] = sweep.best_dice
            row[f"{mode}_best_threshold"] = sweep.best_threshold
        for variant in variants:
            row[f"{variant}_delta_auc"] = row[f"{variant}_auc"] - row["exact_auc"]
            row[f"{variant}_delta_best_dice"] = row[f"{variant}_best_dice"] - row["exact_best_dice"]
            row[f"{variant}_max_abs_diff"] = max(d[0] for d in diffs[variant][i])
            row[f"{variant}_mean_abs_diff"] = float(np.mean([d[1] for d in diffs[variant][i]]))
            row[f"{variant}_mean_abs_diff_labelled"] = float(np.mean([d[2] for d in diffs[variant][i]]))
        rows.append(row)
    result = {
        "model": card.name,
        "split": split.name,
        "mosaics": per_mosaic,
        "step_px": STRIDE,
        "sigma_unit_px": stride,
        "torch_threads": torch.get_num_threads(),
        "seconds": {mode: round(t, 1) for mode, t in seconds.items()},
        "speed_ratio": {v: round(seconds["exact"] / seconds[v], 1) for v in variants if seconds[v]},
        "sigmas": rows,
    }
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
