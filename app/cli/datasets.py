"""``rcmseg phantom`` and ``rcmseg weak-labels``: the annotated mosaics a model is trained on, and the
weakly labelled patch table drawn from them."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from models.errors import InvalidParameter
from models.labels import LABEL_CODES

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    register_phantom(sub)
    register_weak_labels(sub)


FIELD_PIXEL_SIZES = (2.0, 0.5)
LEAST_SIDE_UM = 500
MIN_SIDE_UM = 3500
MAX_SIDE_UM = 6000
"""Mosaic sides in um: the paper-like default range ``MIN..MAX``, down to ``LEAST`` (one microscope field) for
a quick try. The same numbers as ``models.phantom`` (not imported here, to keep ``rcmseg --help`` light)."""


def register_phantom(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "phantom",
        help="write synthetic RCM mosaics with pixel label maps and a manifest",
        description="Write phantom mosaics ({id}.tif, uint8), label maps ({id}_labels.png, codes 0..6) "
        "and manifest.csv. One mosaic is one patient; identical options give identical files.",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--count", type=int, required=True, help="number of mosaics")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--pixel-size-um",
        type=float,
        choices=FIELD_PIXEL_SIZES,
        default=2.0,
        help="2.0 (the paper's processing resolution, default) or 0.5 (the microscope's)",
    )
    p.add_argument(
        "--min-side-um",
        type=int,
        default=None,
        help=f"smallest mosaic side in um, {LEAST_SIDE_UM}..{MAX_SIDE_UM} (default {MIN_SIDE_UM}, like the "
        "paper's mosaics, or --max-side-um where that is smaller)",
    )
    p.add_argument(
        "--max-side-um",
        type=int,
        default=MAX_SIDE_UM,
        help=f"largest mosaic side in um, {LEAST_SIDE_UM}..{MAX_SIDE_UM} (default {MAX_SIDE_UM}: 3000 px at "
        "2 um/px); --max-side-um 1000 alone makes 500 px mosaics in about a second each, for a quick try",
    )
    p.add_argument("--workers", type=int, default=1, help="processes rendering in parallel (default 1)")
    p.add_argument(
        "--difficulty",
        default="default",
        help="how far benign and aspecific patterns overlap: 'default' (today's phantoms, bit for bit), a "
        "preset ('hard', 'harder') or NAME=VALUE settings, alone or after a preset ('hard,noise=0.2'); "
        "NAME: contrast (0.1..1, 1 = today's), overlap, mimics, noise (0..1, 0 = today's), boundary_um "
        "(0..100); see docs/phantom.md",
    )
    p.set_defaults(func=run_phantom)


def run_phantom(args: argparse.Namespace) -> int:
    logging.getLogger("pyvips").setLevel(logging.WARNING)
    from tqdm import tqdm

    from models.phantom import parse_difficulty
    from worker.datasets.phantom_files import PhantomRun, generate_phantoms

    difficulty = parse_difficulty(args.difficulty)
    if args.count < 1:
        raise InvalidParameter(f"--count must be >= 1, got {args.count}")
    min_side_um = min(MIN_SIDE_UM, args.max_side_um) if args.min_side_um is None else args.min_side_um
    if not LEAST_SIDE_UM <= min_side_um <= args.max_side_um <= MAX_SIDE_UM:
        raise InvalidParameter(
            f"mosaic sides must satisfy {LEAST_SIDE_UM} <= --min-side-um <= --max-side-um <= "
            f"{MAX_SIDE_UM} um, got {min_side_um} and {args.max_side_um}"
        )
    if args.workers < 1:
        raise InvalidParameter(f"--workers must be >= 1, got {args.workers}")
    run_spec = PhantomRun(
        count=args.count,
        seed=args.seed,
        min_side=round(min_side_um / args.pixel_size_um),
        max_side=round(args.max_side_um / args.pixel_size_um),
        pixel_size_um=args.pixel_size_um,
        difficulty=difficulty,
    )
    # disable=None: no bar when stderr is not a terminal
    with tqdm(total=args.count, unit="mosaic", desc="phantom", disable=None) as bar:
        rows = generate_phantoms(
            args.out, run_spec, workers=args.workers, on_mosaic=lambda _row: bar.update()
        )
    labelled = sum(int(str(r[LABEL_CODES[c]])) for r in rows for c in LABEL_CODES if c > 0)
    total = sum(int(str(r["width"])) * int(str(r["height"])) for r in rows)
    share = 100.0 * labelled / total
    unit = "mosaic" if len(rows) == 1 else "mosaics"
    log.info(
        "%d %s in %s (difficulty %s), %.1f %% of pixels labelled",
        len(rows), unit, args.out, difficulty.describe(), share,
    )  # fmt: skip
    return 0


def register_weak_labels(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weak-labels",
        help="draw weakly labelled 1 mm patches from annotated mosaics (the paper's recipe)",
        description="Split patients 70/10/20 keeping class pixel shares alike, then draw random labelled "
        "centre pixels per class; a 500 x 500 patch at 2 um/px centred there takes the centre's class. "
        "Writes FILE (CSV: mosaic, patient, x, y, code, label, split) and FILE with .json (split record).",
    )
    p.add_argument("--mosaics", type=Path, required=True, help="folder of {id}.tif + {id}_labels.png/.nrrd")
    p.add_argument("--out", type=Path, required=True, help="patch table to write (.csv)")
    p.add_argument(
        "--per-class",
        type=int,
        default=5000,
        help="patches per benign class; aspecific gets five times as many (default 5000, as the paper)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the split and the draws (default 0)")
    p.add_argument(
        "--pixel-size-um",
        type=float,
        default=None,
        help="pixel size of mosaics not listed in a manifest.csv (VivaScope: 0.5)",
    )
    p.set_defaults(func=run_weak_labels)


def run_weak_labels(args: argparse.Namespace) -> int:
    logging.getLogger("pyvips").setLevel(logging.WARNING)
    from tqdm import tqdm

    from worker.datasets.annotated import find_mosaics
    from worker.datasets.table import build_table, table_counts, write_table

    if args.out.suffix.lower() != ".csv":
        raise InvalidParameter(f"--out must name a .csv file, got {args.out}")
    if args.pixel_size_um is not None and not args.pixel_size_um > 0:
        raise InvalidParameter(f"--pixel-size-um must be > 0, got {args.pixel_size_um}")
    mosaics = find_mosaics(args.mosaics, pixel_size_um=args.pixel_size_um)
    # disable=None: no bar when stderr is not a terminal
    with tqdm(total=2 * len(mosaics), unit="mosaic", desc="weak-labels", disable=None) as bar:
        table = build_table(
            mosaics, per_class=args.per_class, seed=args.seed, on_mosaic=lambda _n: bar.update()
        )
    write_table(args.out, table)
    for split, counts in sorted(table_counts(table).items()):
        log.info("%s: %d patches %s", split, sum(counts.values()), counts)
    unit = "mosaic" if len(mosaics) == 1 else "mosaics"
    log.info("wrote %d patches from %d %s to %s", len(table), len(mosaics), unit, args.out)
    return 0
