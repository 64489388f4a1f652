"""The patch table: weakly labelled patch centres drawn from annotated mosaics, and its CSV + JSON files.

The table holds coordinates only (mosaic, patient, x, y, code, label, split); its JSON sidecar records the
sources, the split's patients and the counts. Patients are split first, then centres are drawn mosaic by
mosaic (:mod:`models.training.weak_labels` holds the sampling).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.errors import InvalidParameter
from models.labels import ASPECIFIC, LABEL_CODES
from models.training.weak_labels import (
    NUM_CODES,
    PATCH,
    centre_counts,
    draw_centres,
    plan_draws,
    split_patients,
    split_summary,
)
from worker.datasets.annotated import PROCESSING_PIXEL_SIZE_UM, AnnotatedMosaic, processing_labels

TABLE_FIELDS = ["mosaic", "patient", "x", "y", "code", "label", "split"]


@dataclass
class PatchTable:
    """Patch centres (at the processing pixel size) with their codes, binary labels and splits."""

    mosaic: list[str]
    patient: list[str]
    x: np.ndarray
    y: np.ndarray
    code: np.ndarray
    split: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.mosaic)

    @property
    def label(self) -> np.ndarray:
        return (self.code == ASPECIFIC).astype(np.int64)

    def select(self, split: str) -> PatchTable:
        """The rows of one split."""
        return self.take([i for i, s in enumerate(self.split) if s == split])

    def take(self, idx: list[int]) -> PatchTable:
        """The rows ``idx``, in that order, with the same ``meta``."""
        return PatchTable(
            mosaic=[self.mosaic[i] for i in idx],
            patient=[self.patient[i] for i in idx],
            x=self.x[idx],
            y=self.y[idx],
            code=self.code[idx],
            split=[self.split[i] for i in idx],
            meta=self.meta,
        )


def build_table(
    mosaics: Sequence[AnnotatedMosaic],
    *,
    per_class: int,
    seed: int,
    on_mosaic: Callable[[str], None] | None = None,
) -> PatchTable:
    """Split patients, then draw patch centres mosaic by mosaic (two passes over the label maps)."""
    counts = np.zeros((len(mosaics), NUM_CODES), dtype=np.int64)
    for i, m in enumerate(mosaics):
        counts[i] = centre_counts(processing_labels(m), PATCH)
        if on_mosaic is not None:
            on_mosaic(m.name)
    by_patient: dict[str, np.ndarray] = {}
    for m, c in zip(mosaics, counts, strict=True):
        by_patient[m.patient] = by_patient.get(m.patient, np.zeros(NUM_CODES, dtype=np.int64)) + c
    split = split_patients(by_patient, seed=seed)
    plan = plan_draws(counts, per_class)
    cols: dict[str, list[Any]] = {k: [] for k in ("mosaic", "patient", "x", "y", "code", "split")}
    for i, m in enumerate(mosaics):
        wanted = {c: int(plan[i, c]) for c in range(1, NUM_CODES) if plan[i, c] > 0}
        if wanted:
            draw = draw_centres(processing_labels(m), wanted, np.random.default_rng([seed, i]), PATCH)
            n = len(draw.code)
            cols["mosaic"] += [m.image.name] * n
            cols["patient"] += [m.patient] * n
            cols["x"] += draw.x.tolist()
            cols["y"] += draw.y.tolist()
            cols["code"] += draw.code.tolist()
            cols["split"] += [split[m.patient]] * n
        if on_mosaic is not None:
            on_mosaic(m.name)
    meta = {
        "mosaics_dir": str(mosaics[0].image.parent.resolve()),
        "patch": PATCH,
        "processing_pixel_size_um": PROCESSING_PIXEL_SIZE_UM,
        "per_class": per_class,
        "seed": seed,
        "mosaics": {m.image.name: {"patient": m.patient, "pixel_size_um": m.pixel_size_um} for m in mosaics},
        "split": split_summary(by_patient, split),
    }
    return PatchTable(
        mosaic=cols["mosaic"],
        patient=cols["patient"],
        x=np.asarray(cols["x"], dtype=np.int64),
        y=np.asarray(cols["y"], dtype=np.int64),
        code=np.asarray(cols["code"], dtype=np.int64),
        split=cols["split"],
        meta=meta,
    )


def write_table(path: Path, table: PatchTable) -> None:
    """``path`` (CSV, one row per patch) and ``path.with_suffix('.json')`` (sources, split record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(TABLE_FIELDS)
        labels = table.label
        for i in range(len(table)):
            writer.writerow(
                [table.mosaic[i], table.patient[i], int(table.x[i]), int(table.y[i]), int(table.code[i]),
                 int(labels[i]), table.split[i]]
            )  # fmt: skip
    meta = dict(table.meta)
    meta["mosaics_dir"] = os.path.relpath(Path(meta["mosaics_dir"]), path.parent.resolve())
    meta["counts"] = table_counts(table)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def table_counts(table: PatchTable) -> dict[str, dict[str, int]]:
    """Patches per split and class."""
    out: dict[str, dict[str, int]] = {}
    for s, c in zip(table.split, table.code.tolist(), strict=True):
        row = out.setdefault(s, {})
        row[LABEL_CODES[c]] = row.get(LABEL_CODES[c], 0) + 1
    return out


def read_table(path: Path) -> PatchTable:
    """A patch table and its JSON sidecar; ``meta['mosaics_dir']`` becomes an absolute path."""
    if not path.is_file():
        raise InvalidParameter(f"{path}: no such patch table")
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise InvalidParameter(f"{sidecar}: missing (written by rcmseg weak-labels beside the table)")
    meta = json.loads(sidecar.read_text(encoding="utf-8"))
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    missing = set(TABLE_FIELDS) - set(rows[0] if rows else TABLE_FIELDS)
    if missing:
        raise InvalidParameter(f"{path}: missing column(s) {sorted(missing)}")
    meta["mosaics_dir"] = str((path.parent / meta["mosaics_dir"]).resolve())
    return PatchTable(
        mosaic=[r["mosaic"] for r in rows],
        patient=[r["patient"] for r in rows],
        x=np.asarray([int(r["x"]) for r in rows], dtype=np.int64),
        y=np.asarray([int(r["y"]) for r in rows], dtype=np.int64),
        code=np.asarray([int(r["code"]) for r in rows], dtype=np.int64),
        split=[r["split"] for r in rows],
        meta=meta,
    )
