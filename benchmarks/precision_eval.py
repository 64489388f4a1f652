"""What reduced precision does to the paper's metrics: pixel AUC and Dice of bf16 and fp16 against fp32.

    .venv/bin/python -m benchmarks.precision_eval --model data/protocol/phantom-b2 \
        --mosaics data/protocol/phantoms --split test --out data/precision [--step 100] [--sigma 80] \
        [--max-mosaics 3] [--device cpu|cuda] [--json out.json]

``rcmseg evaluate`` runs once per precision (fp32 and ``--precisions``: bf16, fp16) on the same mosaics,
with one CAM row (the model card's defaults unless ``--step``/``--sigma`` say otherwise) and no bootstrap,
each into ``OUT/<precision>`` (``OUT/<precision>-firstN`` with ``--max-mosaics N``; a finished one is
reused, an unfinished one resumed).

Reported per precision: the pooled pixel AUC, the best Dice and its threshold, the Dice at the card's
threshold and the seconds; for each reduced precision, its differences from fp32, unrounded. Phantoms with
aspecific tissue are what make this mean something: on a mosaic without it every window's probability is
near 0 and no difference can show. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import common
from worker.evaluation.sweep import output_stride
from worker.io.checkpoint import load_model

PRECISIONS = ("fp32", "bf16", "fp16")


def parse_args() -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--model", type=Path, required=True, help="model folder")
    parser.add_argument("--mosaics", type=Path, required=True, help="phantom folder (with labels)")
    parser.add_argument("--split", default="test", choices=("val", "test", "all"))
    parser.add_argument("--out", type=Path, required=True, help="folder of the three evaluations")
    parser.add_argument("--step", type=int, default=None, help="px (default: the card's)")
    parser.add_argument("--sigma", type=float, default=None, help="px (default: the card's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--max-mosaics", type=int, default=None,
        help="only the first N mosaics of the split (fp16 runs about 10 x slower than fp32 on a CPU)",
    )  # fmt: skip
    parser.add_argument(
        "--precisions", nargs="+", choices=PRECISIONS[1:], default=list(PRECISIONS[1:]),
        help="the reduced precisions to compare with fp32 (bf16 fp16)",
    )  # fmt: skip
    common.add_json_option(parser)
    return parser.parse_args()


def run_metrics(report: dict[str, Any], threshold: float) -> dict[str, float | None]:
    """The one CAM row of an evaluation report: pooled AUC, best Dice and Dice at ``threshold``."""
    (run,) = [r for r in report["runs"] if r["mode"] == "exact"]
    pooled = run["pooled"]
    at = min(
        range(len(pooled["dice_thresholds"])), key=lambda i: abs(pooled["dice_thresholds"][i] - threshold)
    )
    return {
        "auc": pooled["auc"],
        "best_dice": pooled["best_dice"],
        "best_threshold": pooled["best_threshold"],
        "dice_at_card_threshold": pooled["dice"][at],
    }


def main() -> int:
    args = parse_args()
    model = load_model(args.model)
    card, defaults = model.card, model.card.method_defaults()
    step = args.step or defaults.step
    sigma = args.sigma if args.sigma is not None else defaults.sigma
    stride = output_stride(model)  # evaluate takes sigmas in units of the output stride
    sigma_units = "none" if sigma == "none" else f"{float(sigma) / stride:g}"
    results: dict[str, Any] = {}
    for precision in ("fp32", *args.precisions):
        out = args.out / (precision if args.max_mosaics is None else f"{precision}-first{args.max_mosaics}")
        argv = [
            sys.executable, "-m", "app.cli", "evaluate", "--model", str(args.model),
            "--mosaics", str(args.mosaics), "--split", args.split, "--out", str(out),
            "--cams", "cam", "--steps", str(step), "--sigmas", sigma_units, "--bootstrap", "0",
            "--no-panels", "--no-histograms",
            "--precision", precision, "--device", args.device,
        ]  # fmt: skip
        if args.max_mosaics is not None:
            argv += ["--max-mosaics", str(args.max_mosaics)]
        if not (out / "report.json").is_file():  # a finished evaluation is reused, an unfinished one resumed
            subprocess.run(argv, check=True)
        report = json.loads((out / "report.json").read_text(encoding="utf-8"))
        results[precision] = {
            **run_metrics(report, defaults.threshold),
            "seconds": report["timings"]["total_s"],
        }
    base = results["fp32"]
    result = {
        "model": card.name,
        "mosaics": str(args.mosaics),
        "split": args.split,
        "max_mosaics": args.max_mosaics,
        "step": step,
        "sigma_px": sigma,
        "card_threshold": defaults.threshold,
        "device": args.device,
        "precisions": results,
        "against_fp32": {
            p: {k: results[p][k] - base[k] for k in ("auc", "best_dice", "dice_at_card_threshold")}
            for p in args.precisions
        },
    }
    common.write_result(result, args.json, benchmark="precision-eval", device=args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
