"""``rcmseg segment``: one mosaic in, heatmap, mask, Deep Zoom layers, GeoJSON and a summary out."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from app.cli.options import (
    add_device_options,
    add_model_option,
    add_scorecam_options,
    positive_int,
    sigma_type,
)

log = logging.getLogger("rcmseg.segment")


def register(sub: Any) -> None:
    p = sub.add_parser("segment", help="segment one RCM mosaic (file or VivaBlock folder)")
    p.add_argument("input", type=Path, help="TIFF/BigTIFF, PNG, JPEG, BMP or a VivaBlock folder")
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (must not exist unless --overwrite)"
    )
    add_model_option(p)
    p.add_argument("--step", type=positive_int, default=25, help="window step in processing px (default 25)")
    p.add_argument(
        "--sigma",
        type=sigma_type,
        default=None,
        help="Gaussian sigma in processing px, or 'none' for plain averaging (default none)",
    )
    p.add_argument(
        "--cam",
        choices=["cam", "scorecam"],
        default="cam",
        help="class activation maps: cam (classic, one pass) or scorecam (one pass per channel)",
    )
    p.add_argument(
        "--mode",
        choices=["exact", "dense"],
        default="exact",
        help="exact: the paper's sliding windows; dense: one convolutional pass, windows every 32 px",
    )
    add_scorecam_options(p)
    p.add_argument("--threshold", type=float, default=None, help="mask threshold (default: the model card's)")
    p.add_argument(
        "--pixel-size",
        dest="pixel_size_um",
        type=float,
        default=0.5,
        help="input um/px (default 0.5, VivaScope)",
    )
    p.add_argument(
        "--downsample", type=positive_int, default=None, help="integer factor; overrides --pixel-size"
    )
    add_device_options(p)
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=2 * 12000 * 12000,
        help="refuse larger mosaics (default 288,000,000)",
    )
    p.add_argument("--grid-cols", type=positive_int, default=None, help="VivaBlock: tiles per row")
    p.add_argument("--serpentine", action="store_true", help="VivaBlock: every other row runs right to left")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder when done")
    p.set_defaults(func=run)


def log_cost(header: Any, model: Any, params: Any) -> None:
    """Log how many windows (and, for ScoreCAM, network passes) the mosaic will take, before it is read."""
    from models.cam.scorecam import scorecam_cost
    from worker.engine.windows import estimate_windows

    factor = params.downsample_for(model.card.pixel_size_um)
    windows = estimate_windows(
        header.height, header.width, downsample=factor, window=model.card.window, step=params.step
    )
    if params.cam == "scorecam":
        channels = int(model.net.num_features)
        passes = scorecam_cost(windows, channels, params.scorecam_top_k)
        log.info(
            "estimated cost: %d windows x (1 + %d channels) = %d forward passes",
            windows,
            min(channels, params.scorecam_top_k or channels),
            passes,
        )
    else:
        log.info(
            "estimated cost: %d windows (%d x %d px at downsample %d)",
            windows,
            header.width // factor,
            header.height // factor,
            factor,
        )


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from worker.engine.device import default_precision, prepare_process, resolve_device
    from worker.engine.params import Progress, RunOptions, SegmentParams
    from worker.engine.pipeline import segment_mosaic
    from worker.io.checkpoint import load_model
    from worker.io.mosaic import VivaBlockLayout, probe
    from worker.io.zoo import resolve_model

    device = resolve_device(args.device)
    prepare_process(device)
    params = SegmentParams.from_values(
        {**vars(args), "precision": args.precision or default_precision(device)}
    )
    layout = VivaBlockLayout(cols=args.grid_cols, serpentine=args.serpentine)
    header = probe(args.input, max_pixels=args.max_pixels, layout=layout)  # fail before loading torch
    model = load_model(resolve_model(args.model), device)
    log_cost(header, model, params)
    options = RunOptions(device=args.device, batch_size=args.batch_size, max_pixels=args.max_pixels)
    bars: dict[str, tqdm] = {}

    def show(p: Progress) -> None:
        if p.stage == "read":  # decoding errors surface here: keep them to one line
            return
        bar = bars.get(p.stage)
        if bar is None:
            bar = bars[p.stage] = tqdm(
                total=p.total, desc=p.stage, unit="win" if p.stage == "windows" else "step"
            )
        bar.total = p.total
        bar.update(p.done - bar.n)

    try:
        summary = segment_mosaic(
            args.input,
            model,
            args.out,
            params=params,
            options=options,
            progress=show,
            layout=layout,
            overwrite=args.overwrite,
        )
    finally:
        for bar in bars.values():
            bar.close()
    brief = {k: summary[k] for k in ("aspecific_area_fraction", "max_window_probability", "regions")}
    print(json.dumps({"out": str(args.out), **brief, "windows": summary["windows"]}))
    return 0
