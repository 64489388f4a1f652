"""How far reduced precision moves the heatmap: bf16 and fp16 against fp32 on one mosaic.

    .venv/bin/python -m benchmarks.precision_diff --model models/zoo/phantom-b2 \
        --mosaic data/phantoms/phantom-s0-0006.tif [--crop 0] [--step 128] [--sigma 160] \
        [--device cpu|cuda] [--json out.json]

The same windows (the whole mosaic, or a ``--crop`` px square from its centre; processing resolution) go
through the engine's ``run_windows`` + ``stitch_windows`` once per precision; reported for bf16 and fp16:
the largest and mean absolute heatmap difference against fp32, the largest window-probability difference,
and the seconds of each run. Reduced precision is the default on CUDA only; on the CPU it is measured for
its error, not its speed. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common
from worker.engine.accumulate import stitch_windows
from worker.engine.device import default_batch_size
from worker.engine.network_pass import WindowStats, run_windows
from worker.engine.windows import WindowGrid
from worker.io.checkpoint import LoadedModel, load_model
from worker.io.mosaic import open_mosaic
from worker.params import SegmentParams

PRECISIONS = ("fp32", "bf16", "fp16")


def parse_args() -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = common.parser(__doc__)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--mosaic", type=Path, required=True, help="a mosaic at processing resolution")
    parser.add_argument("--crop", type=int, default=0, help="px square from the centre; 0: all")
    parser.add_argument("--step", type=int, default=128)
    parser.add_argument("--sigma", type=float, default=160.0, help="px; 5 x the output stride")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    common.add_json_option(parser)
    return parser, parser.parse_args()


def recording(batches: Iterable[Any], kept: list[np.ndarray]) -> Iterator[Any]:
    """Pass the engine's window batches on, keeping each batch's probabilities."""
    for batch in batches:
        kept.append(batch.prob.float().cpu().numpy().astype(np.float64))
        yield batch


def centre_crop(path: Path, crop: int) -> np.ndarray:
    """The mosaic's pixels, or a ``crop`` px square from its centre (0: all of it)."""
    full = np.asarray(open_mosaic(path, max_pixels=1 << 31).image.numpy(), dtype=np.uint8)
    side = crop or max(full.shape)
    y0 = max(0, (full.shape[0] - side) // 2)
    x0 = max(0, (full.shape[1] - side) // 2)
    return np.ascontiguousarray(full[y0 : y0 + side, x0 : x0 + side])


def run_precisions(
    image: np.ndarray, model: LoadedModel, *, grid: WindowGrid, batch: int, sigma: float
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Per precision: the stitched heatmap, every window's probability and the seconds of the run."""
    heats: dict[str, np.ndarray] = {}
    probs: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rcmseg-precision-") as tmp:
        for precision in PRECISIONS:
            params = SegmentParams(step=grid.step, precision=precision)  # type: ignore[arg-type]
            stats = WindowStats()
            t0 = time.perf_counter()
            kept: list[np.ndarray] = []
            batches = run_windows(image, model, grid=grid, params=params, batch_size=batch, stats=stats)
            heat, _ = stitch_windows(
                recording(batches, kept),
                grid=grid,
                sigma=sigma,
                budget_bytes=1 << 30,
                workdir=Path(tmp),
                stats=stats,
            )
            seconds[precision] = round(time.perf_counter() - t0, 2)
            heats[precision] = np.asarray(heat, dtype=np.float64)
            probs[precision] = np.concatenate(kept) if kept else np.zeros(0)
    return heats, probs, seconds


def main() -> int:
    parser, args = parse_args()
    device = common.prepare(args.device)
    model = load_model(args.model, device)
    image = centre_crop(args.mosaic, args.crop)
    grid = WindowGrid(height=image.shape[0], width=image.shape[1], window=model.card.window, step=args.step)
    heats, probs, seconds = run_precisions(
        image, model, grid=grid, batch=default_batch_size(device, model.card.window), sigma=args.sigma
    )
    if probs["fp32"].size == 0:
        parser.error(f"{args.mosaic}: every window is empty (all-zero pixels); nothing to compare")
    result = {
        "model": model.card.name,
        "mosaic": args.mosaic.name,
        "crop": [int(image.shape[0]), int(image.shape[1])],
        "step": args.step,
        "sigma_px": args.sigma,
        "windows": grid.count,
        "device": device.type,
        "seconds": seconds,
        "fp32_heatmap_max": round(float(heats["fp32"].max()), 5),
        "fp32_windows_with_p_over_half": int((probs["fp32"] > 0.5).sum()),
        "against_fp32": {
            p: {
                "heatmap_max_abs": round(float(np.abs(heats[p] - heats["fp32"]).max()), 5),
                "heatmap_mean_abs": round(float(np.abs(heats[p] - heats["fp32"]).mean()), 6),
                "probability_max_abs": round(float(np.abs(probs[p] - probs["fp32"]).max()), 5),
            }
            for p in PRECISIONS[1:]
        },
    }
    common.write_result(result, args.json, benchmark="precision", device=device.type)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
