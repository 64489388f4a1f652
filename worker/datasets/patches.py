"""Weakly labelled patches on disk: finding annotated mosaics, the patch table, and cropping on the fly.

A folder of mosaics holds ``{id}.tif`` (or .tiff/.png/.jpg) beside ``{id}_labels.png`` (or .tif/.nrrd/.nhdr,
codes 0..6; NRRD is what Seg3D, the paper's annotation tool, exports). An optional ``manifest.csv`` (as
written by ``rcmseg phantom``) gives each mosaic's patient and pixel size; without one, each mosaic is its own
patient and ``--pixel-size-um`` applies to all.

The patch table holds coordinates only (mosaic, patient, x, y, code, label, split). Training decodes each
mosaic once, at the processing pixel size, into a raw ``.npy`` cache; ``PatchDataset`` memory-maps those and
crops windows on the fly, each DataLoader worker opening the mosaics itself.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyvips
import torch
from torch.utils.data import Dataset

from models.errors import InvalidParameter
from models.labels import ASPECIFIC, LABEL_CODES
from models.training.augment import random_offset
from models.training.weak_labels import (
    NUM_CODES,
    PATCH,
    centre_counts,
    downsample_labels,
    draw_centres,
    plan_draws,
    split_patients,
    split_summary,
)
from worker.errors import UnreadableMosaic
from worker.io.mosaic import open_mosaic, probe

log = logging.getLogger(__name__)

MOSAIC_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
LABEL_SUFFIXES = ("_labels.png", "_labels.tif", "_labels.tiff", "_labels.nrrd", "_labels.nhdr")
TABLE_FIELDS = ["mosaic", "patient", "x", "y", "code", "label", "split"]
MAX_PIXELS = 20000 * 20000
PROCESSING_PIXEL_SIZE_UM = 2.0


@dataclass(frozen=True)
class AnnotatedMosaic:
    """A mosaic file, its label map file, its patient and its pixel size."""

    name: str
    image: Path
    labels: Path
    patient: str
    pixel_size_um: float

    def downsample(self, processing_um: float = PROCESSING_PIXEL_SIZE_UM) -> int:
        """The integer factor to the processing pixel size (4 for 0.5 um/px mosaics, 1 for phantoms)."""
        return max(1, round(processing_um / self.pixel_size_um))


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
        idx = [i for i, s in enumerate(self.split) if s == split]
        return PatchTable(
            mosaic=[self.mosaic[i] for i in idx],
            patient=[self.patient[i] for i in idx],
            x=self.x[idx],
            y=self.y[idx],
            code=self.code[idx],
            split=[self.split[i] for i in idx],
            meta=self.meta,
        )


def read_manifest(folder: Path) -> dict[str, dict[str, str]]:
    path = folder / "manifest.csv"
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {row["id"]: row for row in csv.DictReader(fh)}


def find_mosaics(folder: Path, *, pixel_size_um: float | None = None) -> list[AnnotatedMosaic]:
    """Every mosaic of ``folder`` that has a label map, sorted by name."""
    if not folder.is_dir():
        raise InvalidParameter(f"{folder}: no such folder")
    manifest = read_manifest(folder)
    found = []
    for label_path in sorted(folder.iterdir()):
        suffix = next((s for s in LABEL_SUFFIXES if label_path.name.lower().endswith(s)), None)
        if suffix is None:
            continue
        name = label_path.name[: -len(suffix)]
        image = next(
            (folder / f"{name}{s}" for s in MOSAIC_SUFFIXES if (folder / f"{name}{s}").is_file()), None
        )
        if image is None:
            log.warning("%s: no mosaic beside this label map, skipped", label_path)
            continue
        row = manifest.get(name, {})
        size = float(row["pixel_size_um"]) if row.get("pixel_size_um") else pixel_size_um
        if size is None:
            raise InvalidParameter(f"{image}: pixel size unknown; give --pixel-size-um or a manifest.csv")
        found.append(AnnotatedMosaic(name, image, label_path, row.get("patient") or name, size))
    if not found:
        raise InvalidParameter(f"{folder}: no mosaic with a label map ({{id}}_labels.png/.nrrd) found")
    return found


def read_labels(path: Path) -> np.ndarray:
    """A label map (PNG/TIFF, or NRRD as Seg3D exports it) as a 2-D uint8 array of codes 0..6."""
    if path.suffix.lower() in (".nrrd", ".nhdr"):
        import nrrd

        try:
            data, _ = nrrd.read(str(path), index_order="C")
        except (nrrd.NRRDError, OSError, ValueError) as exc:
            raise UnreadableMosaic(f"{path}: unreadable NRRD ({exc})") from None
        data = np.squeeze(np.asarray(data))
    else:
        try:
            img = pyvips.Image.new_from_file(str(path), access="sequential", fail_on="error")
            if img.bands > 1:
                img = img[0]
            data = img.numpy()
        except pyvips.Error as exc:
            raise UnreadableMosaic(f"{path}: unreadable label image ({str(exc).strip()})") from None
    if data.ndim != 2:
        raise UnreadableMosaic(f"{path}: label map must be 2-D, got shape {data.shape}")
    if data.size and (data.min() < 0 or data.max() >= NUM_CODES):
        raise UnreadableMosaic(
            f"{path}: label codes must be 0..{NUM_CODES - 1}, found {int(data.min())}..{int(data.max())}"
        )
    return data.astype(np.uint8, copy=False)


def processing_labels(mosaic: AnnotatedMosaic) -> np.ndarray:
    """The label map at the processing pixel size, checked against the mosaic's size."""
    labels = read_labels(mosaic.labels)
    header = probe(mosaic.image, max_pixels=MAX_PIXELS)
    k = mosaic.downsample()
    if labels.shape == (header.height, header.width):
        return downsample_labels(labels, k)
    if labels.shape == (header.height // k, header.width // k):
        return labels
    raise InvalidParameter(
        f"{mosaic.labels}: label map is {labels.shape[1]} x {labels.shape[0]}, mosaic is "
        f"{header.width} x {header.height}"
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


def _cache_name(image: Path, downsample: int) -> str:
    st = image.stat()
    key = f"{image.resolve()}|{st.st_size}|{st.st_mtime_ns}|{downsample}".encode()
    return f"{image.stem}-{hashlib.sha256(key).hexdigest()[:12]}.npy"


def cache_mosaics(
    table: PatchTable, cache_dir: Path, *, on_mosaic: Callable[[str], None] | None = None
) -> dict[str, Path]:
    """Decode each mosaic of the table once at the processing pixel size into ``cache_dir/*.npy``."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(table.meta["mosaics_dir"])
    out: dict[str, Path] = {}
    for name in sorted(set(table.mosaic)):
        info = table.meta["mosaics"][name]
        k = max(1, round(table.meta["processing_pixel_size_um"] / float(info["pixel_size_um"])))
        image = folder / name
        target = cache_dir / _cache_name(image, k)
        if not target.is_file():
            img = open_mosaic(image, max_pixels=MAX_PIXELS).image
            if k > 1:
                img = img.crop(0, 0, (img.width // k) * k, (img.height // k) * k).shrink(k, k)
            tmp = target.with_suffix(".tmp.npy")
            np.save(tmp, np.ascontiguousarray(img.numpy(), dtype=np.uint8))
            os.replace(tmp, target)
        out[name] = target
        if on_mosaic is not None:
            on_mosaic(name)
    return out


class PatchDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """``crop`` x ``crop`` uint8 windows of the patches: random inside the 500 px patch when training,
    centred otherwise. Memory maps are opened lazily in whichever process reads, so DataLoader workers
    open the mosaics themselves."""

    def __init__(
        self, table: PatchTable, sources: dict[str, Path], *, crop: int = 256, random_crop: bool = False
    ) -> None:
        patch = int(table.meta.get("patch", PATCH))
        if not 1 <= crop <= patch:
            raise InvalidParameter(f"crop must be in 1..{patch}, got {crop}")
        self.table, self.sources, self.crop, self.patch = table, sources, crop, patch
        self.random_crop = random_crop
        self._open: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.table)

    def _mosaic(self, name: str) -> np.ndarray:
        arr = self._open.get(name)
        if arr is None:
            arr = np.load(self.sources[name], mmap_mode="r")
            self._open[name] = arr
        return arr

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        mosaic = self._mosaic(self.table.mosaic[i])
        if self.random_crop:
            oy, ox = random_offset(self.patch, self.crop)
        else:
            oy = ox = (self.patch - self.crop) // 2
        y0 = int(self.table.y[i]) - self.patch // 2 + oy
        x0 = int(self.table.x[i]) - self.patch // 2 + ox
        window = np.array(mosaic[y0 : y0 + self.crop, x0 : x0 + self.crop], dtype=np.uint8)
        if window.shape != (self.crop, self.crop):
            raise InvalidParameter(f"patch {i} at ({x0}, {y0}) leaves mosaic {self.table.mosaic[i]}")
        label = torch.tensor(float(self.table.code[i] == ASPECIFIC))
        return torch.from_numpy(window).unsqueeze(0), label
