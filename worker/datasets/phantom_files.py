"""Writing phantoms to disk: ``{id}.tif`` (uint8), ``{id}_labels.png`` (codes 0..6), ``manifest.csv``."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyvips

from models.labels import LABEL_CODES
from models.phantom import Difficulty, phantom_params, render_phantom

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
DIFFICULTY_FILE = "difficulty.json"
"""Beside the manifest when the phantoms are harder than the default: the settings they were drawn with."""
MANIFEST_FIELDS = ["id", "patient", "width", "height", "pixel_size_um", *LABEL_CODES.values()]
LABEL_SUFFIX = "_labels"


@dataclass(frozen=True, kw_only=True)
class PhantomRun:
    """What to generate: ``count`` mosaics of run ``seed``, sides drawn in ``min_side..max_side`` px, at
    ``difficulty`` (:mod:`models.phantom.difficulty`; the default draws today's phantoms bit for bit)."""

    count: int
    seed: int
    min_side: int = 1750
    max_side: int = 3000
    pixel_size_um: float = 2.0
    difficulty: Difficulty = field(default_factory=Difficulty)


def mosaic_id(seed: int, index: int) -> str:
    return f"phantom-s{seed}-{index:04d}"


def write_image(path: Path, array: np.ndarray, *, pixel_size_um: float | None = None) -> None:
    """Write a uint8 array as an uncompressed TIFF or a PNG, recording the pixel size in TIFFs."""
    img = pyvips.Image.new_from_array(np.ascontiguousarray(array)).copy(interpretation="b-w")
    if path.suffix.lower() in (".tif", ".tiff"):
        per_mm = 1000.0 / pixel_size_um if pixel_size_um else 1.0
        img.tiffsave(str(path), compression="none", xres=per_mm, yres=per_mm)
    else:
        img.pngsave(str(path))


def _render_one(out: Path, run: PhantomRun, index: int) -> dict[str, object]:
    params = phantom_params(
        seed=run.seed,
        index=index,
        min_side=run.min_side,
        max_side=run.max_side,
        pixel_size_um=run.pixel_size_um,
    )
    phantom = render_phantom(params, seed=run.seed, index=index, difficulty=run.difficulty)
    name = mosaic_id(run.seed, index)
    write_image(out / f"{name}.tif", phantom.image, pixel_size_um=run.pixel_size_um)
    write_image(out / f"{name}{LABEL_SUFFIX}.png", phantom.labels)
    counts = np.bincount(phantom.labels.ravel(), minlength=len(LABEL_CODES))
    row: dict[str, object] = {
        "id": name,
        "patient": f"P{run.seed}-{index:04d}",
        "width": params.width,
        "height": params.height,
        "pixel_size_um": run.pixel_size_um,
    }
    row.update({LABEL_CODES[c]: int(counts[c]) for c in LABEL_CODES})
    return row


def iter_phantoms(out: Path, run: PhantomRun, *, workers: int = 1) -> Iterator[dict[str, object]]:
    """Render and write each mosaic, yielding its manifest row in index order."""
    out.mkdir(parents=True, exist_ok=True)
    if workers <= 1:
        for index in range(run.count):
            yield _render_one(out, run, index)
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(_render_one, [out] * run.count, [run] * run.count, range(run.count))


def write_manifest(out: Path, rows: list[dict[str, object]]) -> Path:
    path = out / MANIFEST
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return path


def generate_phantoms(
    out: Path,
    run: PhantomRun,
    *,
    workers: int = 1,
    on_mosaic: Callable[[dict[str, object]], None] | None = None,
) -> list[dict[str, object]]:
    """Write ``run.count`` mosaics, their label maps and the manifest into ``out`` (and, for phantoms
    harder than the default, ``difficulty.json``)."""
    rows = []
    for row in iter_phantoms(out, run, workers=workers):
        rows.append(row)
        if on_mosaic is not None:
            on_mosaic(row)
    write_manifest(out, rows)
    record = out / DIFFICULTY_FILE
    if run.difficulty.is_default:
        record.unlink(missing_ok=True)
    else:
        spec = {"seed": run.seed, "count": run.count, "difficulty": run.difficulty.as_dict()}
        record.write_text(json.dumps(spec, indent=1) + "\n", encoding="utf-8")
    unit = "mosaic" if len(rows) == 1 else "mosaics"
    log.info("wrote %d phantom %s and %s to %s", len(rows), unit, MANIFEST, out)
    return rows
