"""``rcmseg bench``: measure the engine against the bare network on a generated mosaic."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from app.cli.options import add_device_options, add_mode_option, method_value, positive_int


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmark the engine and the bare network in one run")
    p.add_argument(
        "--model",
        default=None,
        help="model folder or zoo name; default: random-weight efficientnet_b2 (the paper's)",
    )
    p.add_argument(
        "--input-size", type=positive_int, default=12000, help="generated mosaic side in px (default 12000)"
    )
    p.add_argument(
        "--downsample",
        type=method_value("downsample"),
        default=4,
        help="integer reduction to processing resolution (default 4: 0.5 to 2 um/px)",
    )
    p.add_argument(
        "--step", type=method_value("step"), default=25, help="window step in processing px (default 25)"
    )
    p.add_argument(
        "--sigma",
        type=method_value("sigma"),
        default=None,
        help="Gaussian sigma in processing px, or 'none' for plain averaging (default: the model card's)",
    )
    add_mode_option(p)
    add_device_options(p)
    p.add_argument(
        "--network-iters",
        type=positive_int,
        default=10,
        help="timed batches of the bare network, after two warm-up batches (default 10)",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=Path("benchmarks/results"),
        help="folder for <machine>-<date>.json (default benchmarks/results)",
    )
    p.add_argument("--no-save", action="store_true", help="print only")
    p.add_argument("--out", type=Path, default=None, help="write the JSON to this file instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from worker.bench import BenchConfig, run_bench, save_result, table
    from worker.engine.device import default_precision, prepare_process, resolve_device
    from worker.io.checkpoint import load_model
    from worker.io.zoo import resolve_model

    device = resolve_device(args.device)
    prepare_process(device)
    if args.model is None:
        from worker.io.checkpoint import save_random_model

        folder = Path(tempfile.mkdtemp(prefix="rcmseg-bench-model-")) / "b2"
        model_dir = save_random_model(folder, arch="efficientnet_b2", window=256)
    else:
        model_dir = resolve_model(args.model)
    model = load_model(model_dir, device)
    config = BenchConfig(
        input_size=args.input_size,
        downsample=args.downsample,
        step=args.step,
        sigma=args.sigma,
        precision=args.precision or default_precision(device),
        batch_size=args.batch_size,
        mode=args.mode,
        network_iters=args.network_iters,
    )
    result = run_bench(model, config)
    print(table(result))
    print(json.dumps(result, indent=2))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"saved {args.out}")
    elif not args.no_save:
        print(f"saved {save_result(result, args.results)}")
    return 0
