"""What an evaluation reads: the split's annotated mosaics and weakly labelled patches, and the patch scores.

The split is the one recorded in the patch table written by ``rcmseg weak-labels`` (its JSON sidecar lists
each split's patients); a mosaic belongs to the split when its patient does. Patch probabilities come from
the table's own mosaics, cropped as in validation: the window-sized centre of each 500 px patch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from models.cam.classic import features_and_logit, normalise_input
from models.errors import InvalidParameter
from models.precision import PRECISIONS
from worker.datasets.annotated import AnnotatedMosaic, find_mosaics
from worker.datasets.patch_dataset import PatchDataset, cache_mosaics
from worker.datasets.table import PatchTable, read_table
from worker.io.checkpoint import LoadedModel
from worker.params import Precision
from worker.progress import Progress, ProgressFn

log = logging.getLogger(__name__)

SPLIT_CHOICES = ("train", "val", "test", "all")
TABLE_NAME = "patches.csv"


@dataclass(frozen=True)
class EvalSplit:
    """The mosaics to segment (sorted by name) and the patch rows that belong to them (or ``None``)."""

    name: str
    mosaics: tuple[AnnotatedMosaic, ...]
    patches: PatchTable | None
    table_path: Path | None


def find_patch_table(mosaics_dir: Path) -> Path | None:
    """``patches.csv`` beside the mosaics folder (as ``rcmseg weak-labels`` is usually run) or inside it."""
    for candidate in (mosaics_dir.parent / TABLE_NAME, mosaics_dir / TABLE_NAME):
        if candidate.is_file():
            return candidate
    return None


def patients_of_split(table: PatchTable, split: str) -> set[str]:
    """The split's patients: those the sidecar records (also patients without a patch) and the table's."""
    recorded = table.meta.get("split", {}).get(split, {})
    patients = set(recorded.get("patients", [])) if isinstance(recorded, dict) else set()
    return patients | {p for p, s in zip(table.patient, table.split, strict=True) if s == split}


def load_split(
    mosaics_dir: Path,
    *,
    split: str,
    patches: Path | None = None,
    pixel_size_um: float | None = None,
    max_mosaics: int | None = None,
) -> EvalSplit:
    """The split's mosaics in ``mosaics_dir`` and their patches; ``split='all'`` takes every mosaic and
    works without a patch table (no patch-level metrics then)."""
    if split not in SPLIT_CHOICES:
        raise InvalidParameter(f"split must be one of {', '.join(SPLIT_CHOICES)}, got {split!r}")
    if max_mosaics is not None and max_mosaics < 1:
        raise InvalidParameter(f"max-mosaics must be >= 1, got {max_mosaics}")
    table_path = patches if patches is not None else find_patch_table(mosaics_dir)
    table = read_table(table_path) if table_path is not None else None
    mosaics = find_mosaics(mosaics_dir, pixel_size_um=pixel_size_um)
    if split != "all":
        if table is None:
            raise InvalidParameter(
                f"no {TABLE_NAME} beside or inside {mosaics_dir}; "
                f"give --patches (the table records the {split} split)"
            )
        members = patients_of_split(table, split)
        mosaics = [m for m in mosaics if m.patient in members]
        if not mosaics:
            raise InvalidParameter(f"{mosaics_dir}: no mosaic of a {split} patient of {table_path}")
    if max_mosaics is not None:
        mosaics = mosaics[:max_mosaics]
    rows = None
    if table is not None:
        names = {m.image.name for m in mosaics}
        keep = np.array(
            [
                (split == "all" or s == split) and name in names
                for name, s in zip(table.mosaic, table.split, strict=True)
            ],
            dtype=bool,
        )
        rows = table.take(np.flatnonzero(keep).tolist())
        if not len(rows):
            log.warning("%s holds no %s patch of these mosaics: no patch-level metrics", table_path, split)
            rows = None
    return EvalSplit(name=split, mosaics=tuple(mosaics), patches=rows, table_path=table_path)


@dataclass(frozen=True)
class PatchScores:
    """The probability of every patch, beside its table row."""

    table: PatchTable
    prob: np.ndarray
    seconds: float

    @property
    def label(self) -> np.ndarray:
        return self.table.label


def score_patches(
    table: PatchTable,
    model: LoadedModel,
    *,
    cache_dir: Path,
    precision: Precision,
    batch_size: int,
    progress: ProgressFn | None = None,
) -> PatchScores:
    """The network's probability for each patch's centred window (the paper's patch-level test)."""
    t0 = time.perf_counter()
    sources = cache_mosaics(table, cache_dir)
    dataset = PatchDataset(table, sources, crop=model.card.window, random_crop=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    device = model.device
    probs: list[np.ndarray] = []
    done = 0
    with torch.inference_mode():
        for pixels, _ in loader:
            x = normalise_input(pixels.to(device), model.card.mean, model.card.std)
            _, logit = features_and_logit(model.net, x, dtype=PRECISIONS[precision])
            probs.append(torch.sigmoid(logit).cpu().numpy().astype(np.float64))
            done += len(pixels)
            if progress is not None:
                progress(Progress("patches", done, len(dataset)))
    prob = np.concatenate(probs) if probs else np.zeros(0)
    return PatchScores(table=table, prob=prob, seconds=time.perf_counter() - t0)
