"""How far reduced precision moves the heatmap: bf16 and fp16 against fp32 on one mosaic.

    .venv/bin/python benchmarks/precision_diff.py --model models/zoo/phantom-b2 \
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
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PRECISIONS = ("fp32", "bf16", "fp16")


def recording(batches: Iterable[Any], kept: list[np.ndarray]) -> Iterator[Any]:
    """Pass the engine's window batches on, keeping each batch's probabilities."""
    for batch in batches:
        kept.append(batch.prob.float().cpu().numpy().astype(np.float64))
        yield batch


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--mosaic", type=Path, required=True, help="a mosaic at processing resolution")
    parser.add_argument("--crop", type=int, default=0, help="px square from the centre; 0: all")
    parser.add_argument("--step", type=int, default=128)
    parser.add_argument("--sigma", type=float, default=160.0, help="px; 5 x the output stride")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))

    import torch

    from worker.engine.bench import print_result
    from worker.engine.params import SegmentParams
    from worker.engine.pipeline import WindowStats, default_batch_size, run_windows, stitch_windows
    from worker.engine.windows import WindowGrid
    from worker.io.checkpoint import load_model
    from worker.io.mosaic import open_mosaic

    device = torch.device(args.device)
    model = load_model(args.model, device)
    full = np.asarray(open_mosaic(args.mosaic, max_pixels=1 << 31).image.numpy(), dtype=np.uint8)
    side = args.crop or max(full.shape)
    y0 = max(0, (full.shape[0] - side) // 2)
    x0 = max(0, (full.shape[1] - side) // 2)
    image = np.ascontiguousarray(full[y0 : y0 + side, x0 : x0 + side])
    grid = WindowGrid(height=image.shape[0], width=image.shape[1], window=model.card.window, step=args.step)
    batch = default_batch_size(device, model.card.window)
    heats: dict[str, np.ndarray] = {}
    probs: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="rcmseg-precision-") as tmp:
        for precision in PRECISIONS:
            params = SegmentParams(step=args.step, precision=precision)  # type: ignore[arg-type]
            stats = WindowStats()
            t0 = time.perf_counter()
            kept: list[np.ndarray] = []
            batches = run_windows(image, model, grid=grid, params=params, batch_size=batch, stats=stats)
            heat, _ = stitch_windows(
                recording(batches, kept),
                grid=grid,
                sigma=args.sigma,
                budget_bytes=1 << 30,
                workdir=Path(tmp),
                stats=stats,
            )
            seconds[precision] = round(time.perf_counter() - t0, 2)
            heats[precision] = np.asarray(heat, dtype=np.float64)
            probs[precision] = np.concatenate(kept) if kept else np.zeros(0)
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
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
