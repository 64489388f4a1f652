"""``rcmseg segment``: one mosaic in; heatmap, mask, the heat's Deep Zoom pyramid, GeoJSON, a summary and the
mosaic's own pyramid (``pyramid/``) out."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from app.cli.options import (
    add_device_options,
    add_mode_option,
    add_model_option,
    add_scorecam_options,
    add_step_and_sigma,
    method_value,
    positive_int,
)
from models.errors import InvalidParameter
from worker.params import DEFAULT_INPUT_PIXEL_SIZE_UM, MAX_DOWNSAMPLE

log = logging.getLogger("rcmseg.segment")

OUTPUTS = """\
writes into OUT (built in a temporary folder, renamed into place when complete):
  heatmap.tif          heat 0..1 of the aspecific pattern (float, at processing resolution)
  mask.tif             heat >= threshold (8-bit, 255 inside)
  regions.geojson      the mask's regions as QuPath annotations, in input pixels
  summary.json         parameters and where each came from, model, areas, timings
  heat_histogram.json  pixel counts per heat bin (the area at any threshold)
  heat.dzi, heat_files/        the heat as an 8-bit grey Deep Zoom pyramid
  pyramid/mosaic.dzi, mosaic_files/  the mosaic's own Deep Zoom pyramid
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "segment",
        help="segment one RCM mosaic (file or VivaBlock folder)",
        description="Segment one RCM mosaic: sliding-window CAM or ScoreCAM of the model, stitched with\n"
        "Gaussian weights into a heat map of the aspecific pattern, its mask and its regions.",
        epilog=OUTPUTS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "input",
        type=Path,
        help="TIFF/BigTIFF, PNG, JPEG, BMP, DICOM (a file or a series folder) or a VivaBlock folder",
    )
    p.add_argument(
        "--out", type=Path, required=True, help="output folder (must not exist unless --overwrite)"
    )
    add_model_option(p)
    add_step_and_sigma(p)
    p.add_argument(
        "--cam",
        type=method_value("cam"),
        metavar="{cam,scorecam}",
        default=None,
        help="class activation maps: cam (classic, one pass) or scorecam (one pass per channel); "
        "default: the model card's",
    )
    add_mode_option(p)
    add_scorecam_options(p)
    p.add_argument(
        "--threshold",
        type=method_value("threshold"),
        default=None,
        help="mask threshold, 0..1 (default: the model card's)",
    )
    p.add_argument(
        "--pixel-size",
        dest="pixel_size_um",
        type=method_value("pixel_size_um"),
        default=None,
        help="input um/px (default: what the file records, else "
        f"{DEFAULT_INPUT_PIXEL_SIZE_UM} as on a VivaScope)",
    )
    p.add_argument(
        "--downsample",
        type=method_value("downsample"),
        default=None,
        help=f"integer factor, 1..{MAX_DOWNSAMPLE}; overrides --pixel-size",
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


def log_cost(plan: Any, card: Any, params: Any, channels: int) -> None:
    """Log how many windows (and, for ScoreCAM, network passes) the mosaic will take, before it is read."""
    from models.cam.scorecam import scorecam_cost
    from worker.engine.windows import WindowGrid

    step = 32 if params.mode == "dense" else params.step
    windows = WindowGrid(height=plan.height, width=plan.width, window=card.window, step=step).count
    unit = "window" if windows == 1 else "windows"
    where = f"{plan.width} x {plan.height} px at {card.pixel_size_um:g} um/px"
    if plan.downsample > 1:
        where += f", the input reduced {plan.downsample}x from {plan.input_pixel_size_um:g} um/px"
    if params.cam == "scorecam":
        passes = scorecam_cost(windows, channels, params.scorecam_top_k)
        k = min(channels, params.scorecam_top_k or channels)
        log.info(
            "estimated cost: %d %s x (1 + %d channels) = %d forward passes (%s)",
            windows,
            unit,
            k,
            passes,
            where,
        )
    else:
        log.info("estimated cost: %d %s (%s)", windows, unit, where)
    if plan.pixel_size_source == "assumed":
        log.warning(
            "the file records no pixel size: %g um/px assumed (give --pixel-size to override)",
            plan.input_pixel_size_um,
        )


def check_before_model(args: argparse.Namespace, card: Any, device: Any) -> tuple[Any, Any, Any]:
    """Parameters, layout and plan, checked without loading the network (so errors come at once)."""
    from worker.engine.device import default_precision
    from worker.io.mosaic import VivaBlockLayout, probe
    from worker.params import MethodParams
    from worker.plan import plan_for

    if args.out.exists() and not args.overwrite:
        raise InvalidParameter(f"{args.out}: output folder already exists (give --overwrite to replace it)")
    given = MethodParams.parse({**vars(args), "precision": args.precision or default_precision(device)})
    params = given.resolve(card.method_defaults())
    layout = VivaBlockLayout(cols=args.grid_cols, serpentine=args.serpentine)
    header = probe(args.input, max_pixels=args.max_pixels, layout=layout)
    plan = plan_for(params, header, card)
    return params, layout, plan


def write_mosaic_pyramid(args: argparse.Namespace, layout: Any) -> None:
    """The mosaic's own Deep Zoom pyramid in ``<out>/pyramid/`` (the service keeps it with the stored
    mosaic, shared by its jobs), so the folder holds every layer its summary lists, as the service serves
    them: the mosaic there, the heat beside it."""
    from worker.contract import MOSAIC_PYRAMID
    from worker.io.mosaic import open_mosaic
    from worker.io.pyramid import build_mosaic_pyramid

    mosaic = open_mosaic(args.input, max_pixels=args.max_pixels, layout=layout)
    seconds = build_mosaic_pyramid(mosaic, args.out / MOSAIC_PYRAMID)
    log.info("mosaic pyramid written in %.1f s", seconds or 0.0)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from worker.contract import Stage
    from worker.engine.device import RunOptions, prepare_process, resolve_device
    from worker.engine.pipeline import segment_mosaic
    from worker.io.checkpoint import load_model
    from worker.io.zoo import read_card, resolve_model
    from worker.progress import Progress

    device = resolve_device(args.device)
    folder = resolve_model(args.model)
    params, layout, plan = check_before_model(args, read_card(folder), device)
    prepare_process(device)
    model = load_model(folder, device)
    log_cost(plan, model.card, params, int(model.net.num_features))  # type: ignore[arg-type]
    options = RunOptions(device=args.device, batch_size=args.batch_size, max_pixels=args.max_pixels)
    bars: dict[str, tqdm] = {}

    def show(p: Progress) -> None:
        if p.stage == Stage.READ:  # decoding errors surface here: keep them to one line
            return
        bar = bars.get(p.stage)
        if bar is None:
            bar = bars[p.stage] = tqdm(
                total=p.total,
                desc=p.stage,
                unit="win" if p.stage == Stage.WINDOWS else "step",
                disable=None,  # off when stderr is not a terminal
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
    write_mosaic_pyramid(args, layout)
    brief = {k: summary[k] for k in ("aspecific_area_fraction", "max_window_probability", "regions")}
    print(json.dumps({"out": str(args.out), **brief, "windows": summary["windows"]}))
    return 0
