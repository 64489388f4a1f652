"""``rcmseg evaluate``: the paper's evaluation of a model on a split of annotated mosaics, in one command.

Patch-level ROC/AUC and accuracy on the split's weakly labelled patches; for every CAM method, step and
sigma, pixel AUC and the Dice sweep over labelled pixels (pooled and per mosaic) with 1000-fold bootstrap
intervals; ``report.json``, ``table2.csv``/``table2.md`` (the paper's Table 2), ``roc.png`` and per-mosaic
panels into ``--out``. With ``--choose-defaults`` the report names the row the method defaults come from
(:mod:`worker.evaluation.defaults`); ``--write-defaults`` writes them into the model's card, from the
validation split only.

Each mosaic's results are kept in ``--out``/work as they finish; the same command run again resumes a stopped
evaluation, computing only what is missing or what a changed parameter touches
(:mod:`worker.evaluation.resume`).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.options import (
    add_device_options,
    add_model_option,
    add_scorecam_options,
    non_negative_int,
    positive_int,
    sigma_units,
)
from models.errors import InvalidParameter

if TYPE_CHECKING:
    from worker.evaluation.protocol import EvalParams
    from worker.params import Precision
    from worker.progress import Progress

log = logging.getLogger("rcmseg.evaluate")

DEFAULT_SIGMAS = ["none", "1", "2.5", "5", "6", "7", "8", "9", "10"]


def register(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="reproduce the paper's evaluation (Table 2, Dice, ROC, bootstrap) on annotated mosaics",
        description="The paper's evaluation of a model on a split of annotated mosaics, in one command: "
        "patch-level ROC/AUC and accuracy, Table 2 (pixel AUC and best Dice per CAM method, step and sigma), "
        "bootstrap intervals, ROC figure and per-mosaic panels.",
    )
    # in help order: the data, the sweep, where the network runs, then how files are read and written
    _data_options(p)
    _sweep_options(p)
    _engine_options(p)
    _defaults_options(p)
    _file_options(p)
    p.set_defaults(func=run)


def _data_options(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    p.add_argument("--mosaics", type=Path, required=True, help="folder of {id}.tif + {id}_labels.png")
    p.add_argument("--out", type=Path, required=True, help="output folder (must be empty unless --overwrite)")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default="test", help="default test")
    p.add_argument(
        "--patches",
        type=Path,
        default=None,
        help="patch table that records the split (default: patches.csv beside or inside --mosaics)",
    )
    p.add_argument("--cache", type=Path, default=None, help="patch mosaic cache (default: beside the table)")


def _sweep_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cams",
        nargs="+",
        choices=["cam", "scorecam"],
        default=["cam", "scorecam"],
        help="CAM methods to sweep (default: cam scorecam)",
    )
    p.add_argument(
        "--steps", nargs="+", type=positive_int, default=[25, 50, 100], help="window steps in px (25 50 100)"
    )
    p.add_argument(
        "--sigmas",
        nargs="+",
        type=sigma_units,
        default=[sigma_units(s) for s in DEFAULT_SIGMAS],
        help="Gaussian sigmas in units of the network's output stride (32 px), 'none' for plain averaging "
        f"(default: {' '.join(DEFAULT_SIGMAS)})",
    )
    p.add_argument(
        "--mode",
        choices=["exact", "dense", "both"],
        default="exact",
        help="exact: the paper's windows; dense: CAM rows from one convolutional pass (windows every 32 px, "
        "beyond the paper); both",
    )
    p.add_argument(
        "--max-mosaics", type=positive_int, default=None, help="only the first N mosaics of the split"
    )
    p.add_argument(
        "--bootstrap", type=non_negative_int, default=1000, help="bootstrap resamples (default 1000, 0: none)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    add_scorecam_options(p, skip_help="a row's heat error < this; not exact")
    p.add_argument(
        "--scorecam-steps",
        nargs="+",
        type=positive_int,
        default=None,
        help="the ScoreCAM rows' steps, some of --steps (default: all of them)",
    )


def _engine_options(p: argparse.ArgumentParser) -> None:
    add_device_options(p)
    p.add_argument(
        "--threads", type=positive_int, default=None, help="CPU threads for torch (default: torch's)"
    )


def _defaults_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--choose-defaults",
        action="store_true",
        help="name in report.json and table2.md the row the model's method defaults come from: the best "
        "pooled Dice, ties by AUC, then the cheaper run (docs/results/phantom-benchmark.md)",
    )
    p.add_argument(
        "--write-defaults",
        action="store_true",
        help="also write the chosen defaults into the model folder's card.json (atomically); "
        "only with --split val",
    )


def _file_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pixel-size-um", type=float, default=None, help="mosaic um/px where no manifest.csv gives it"
    )
    p.add_argument("--bins", type=positive_int, default=10_000, help="score histogram bins (default 10000)")
    p.add_argument("--no-panels", action="store_true", help="skip the per-mosaic figures")
    p.add_argument("--no-histograms", action="store_true", help="skip histograms.npz")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty output folder (a folder of an earlier evaluation is resumed without it: "
        "each finished mosaic's results are kept in its work/ folder and reused while their inputs match)",
    )


def run(args: argparse.Namespace) -> int:
    check_options(args)

    from tqdm.contrib.logging import logging_redirect_tqdm

    from worker.engine.device import RunOptions, default_precision, prepare_process, resolve_device
    from worker.evaluation.data import load_split
    from worker.evaluation.report import write_report
    from worker.evaluation.runner import evaluate
    from worker.io.checkpoint import load_model
    from worker.io.zoo import resolve_model

    split = load_split(
        args.mosaics,
        split=args.split,
        patches=args.patches,
        pixel_size_um=args.pixel_size_um,
        max_mosaics=args.max_mosaics,
    )
    device = resolve_device(args.device)
    prepare_process(device, threads=args.threads)
    params = eval_params(args, device_precision=default_precision(device))
    model_dir = resolve_model(args.model)
    if args.write_defaults and not os.access(model_dir, os.W_OK):
        raise InvalidParameter(f"{model_dir}: model folder is not writable (--write-defaults)")
    model = load_model(model_dir, device)
    cache = args.cache
    if cache is None and split.table_path is not None:
        cache = split.table_path.with_name(f"{split.table_path.stem}_cache")
    log.info(
        "%s split: %d %s, %d patches; model %s on %s",
        split.name,
        len(split.mosaics),
        "mosaic" if len(split.mosaics) == 1 else "mosaics",
        0 if split.patches is None else len(split.patches),
        model.card.name,
        device,
    )
    with progress_bars() as show, logging_redirect_tqdm():
        result = evaluate(
            model,
            split,
            params=params,
            options=RunOptions(device=args.device, batch_size=args.batch_size),
            patch_cache=cache,
            progress=show,
            keep_in=args.out,
        )
        report = write_report(
            args.out,
            result,
            command=launch_command(),
            histograms=not args.no_histograms,
            choose=args.choose_defaults or args.write_defaults,
            progress=show,
        )
    if args.write_defaults:
        write_defaults(model_dir, report["chosen_defaults"])
    print(json.dumps(summary_line(report, out=args.out, mosaics=len(split.mosaics))))
    return 0


def check_options(args: argparse.Namespace) -> None:
    """What can be refused before any file is read."""
    from worker.evaluation.defaults import CHOICE_SPLIT
    from worker.evaluation.resume import is_evaluation_folder

    if (
        args.out.exists()
        and any(args.out.iterdir())
        and not args.overwrite
        and not is_evaluation_folder(args.out)
    ):
        raise InvalidParameter(
            f"{args.out}: output folder is not empty and holds no earlier evaluation to resume "
            "(use --overwrite)"
        )
    if args.bins % 50:
        raise InvalidParameter(f"bins must be a multiple of 50 (Dice thresholds 0.02 apart), got {args.bins}")
    if args.write_defaults and args.split != CHOICE_SPLIT:
        raise InvalidParameter(
            f"--write-defaults chooses on the validation patients only (--split {CHOICE_SPLIT}), "
            f"got --split {args.split}"
        )


def write_defaults(model_dir: Path, chosen: dict[str, Any]) -> None:
    """The chosen row into the model's card (``defaults``), its validation figures beside it."""
    from models.card import MethodDefaults
    from worker.evaluation.defaults import write_card_defaults

    write_card_defaults(
        model_dir,
        MethodDefaults.model_validate(chosen["defaults"]),
        validation={k: v for k, v in chosen.items() if k != "defaults"},
    )
    log.info("defaults of %s written into %s", chosen["run"], model_dir / "card.json")


def eval_params(args: argparse.Namespace, *, device_precision: Precision) -> EvalParams:
    """The ``EvalParams`` the options describe (validated there); precision by default the device's."""
    from worker.evaluation.protocol import EvalParams

    return EvalParams(
        cams=tuple(args.cams),
        steps=tuple(args.steps),
        sigma_units=tuple(args.sigmas),
        modes=("exact", "dense") if args.mode == "both" else (args.mode,),
        bootstrap=args.bootstrap,
        seed=args.seed,
        precision=args.precision or device_precision,
        scorecam_top_k=args.scorecam_top_k,
        scorecam_skip_below=args.scorecam_skip_below,
        scorecam_steps=None if args.scorecam_steps is None else tuple(args.scorecam_steps),
        n_bins=args.bins,
        panels=not args.no_panels,
    )


@contextmanager
def progress_bars() -> Iterator[Callable[[Progress], None]]:
    """A progress callback that shows one tqdm bar per stage, one stage at a time; closes what is left."""
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}
    units = {"windows": "win", "patches": "patch", "metrics": "run", "figures": "fig"}

    def show(p: Progress) -> None:
        bar = bars.get(p.stage)
        if bar is None:
            unit = units.get(p.stage, "step")
            # disable=None: no bar when stderr is not a terminal
            bar = bars[p.stage] = tqdm(total=p.total, desc=p.stage, unit=unit, disable=None)
        bar.total = p.total
        bar.update(p.done - bar.n)
        if p.done >= p.total:  # one stage at a time on screen
            bar.close()
            del bars[p.stage]

    try:
        yield show
    finally:
        for bar in bars.values():
            bar.close()


def launch_command() -> str | None:
    """The command line as typed, for the report, when launched as ``rcmseg``."""
    launched = Path(sys.argv[0]).name in ("rcmseg", "__main__.py") if sys.argv else False
    return "rcmseg " + shlex.join(sys.argv[1:]) if launched else None


def summary_line(report: dict[str, Any], *, out: Path, mosaics: int) -> dict[str, Any]:
    """The one JSON line printed at the end: where the files are and the best run of each method."""
    best = {}
    for method, key in report["best"].items():
        pooled = next(r["pooled"] for r in report["runs"] if r["key"] == key)
        best[method] = {"run": key, "auc": pooled["auc"], "best_dice": pooled["best_dice"]}
    patch, chosen = report["patch_level"], report["chosen_defaults"]
    return {
        "out": str(out),
        "mosaics": mosaics,
        "patch_auc": None if patch is None else patch["auc"],
        "patch_accuracy": None if patch is None else patch["accuracy"],
        "best": best,
        "chosen_defaults": None if chosen is None else chosen["defaults"],
    }
