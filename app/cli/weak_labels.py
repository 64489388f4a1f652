"""``rcmseg weak-labels``: turn pixel-annotated mosaics into a table of weakly labelled patch centres."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from models.errors import InvalidParameter

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
