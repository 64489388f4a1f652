"""The patch table of ``rcmseg weak-labels``: balanced classes, patient-disjoint splits, labelled centres."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from models.labels import ASPECIFIC, BENIGN_CODES
from models.training.weak_labels import PATCH
from worker.datasets.annotated import find_mosaics, read_labels
from worker.datasets.phantom_files import write_image
from worker.datasets.table import read_table

SIDE = 620


def label_map(rng: np.random.Generator, codes: list[int], side: int = SIDE) -> np.ndarray:
    """Vertical stripes of the given codes with an unlabelled stripe between each pair."""
    labels = np.zeros((side, side), dtype=np.uint8)
    edges = np.linspace(0, side, 2 * len(codes) + 1).astype(int)
    for k, code in enumerate(codes):
        labels[:, edges[2 * k] : edges[2 * k + 1]] = code
    return labels


@pytest.fixture(scope="module")
def mosaic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twenty annotated mosaics (random images, striped label maps), one per patient, no manifest."""
    folder = tmp_path_factory.mktemp("annotated")
    rng = np.random.default_rng(0)
    for i in range(20):
        codes = [int(c) for c in rng.choice([1, 2, 3, 4, 5, 6], size=3, replace=False)]
        if i % 2 == 0 and ASPECIFIC not in codes:
            codes[0] = ASPECIFIC
        write_image(folder / f"m{i:02d}.tif", rng.integers(0, 255, (SIDE, SIDE), dtype=np.uint8))
        write_image(folder / f"m{i:02d}_labels.png", label_map(rng, codes))
    return folder


@pytest.fixture(scope="module")
def table_path(mosaic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("table") / "patches.csv"
    code = main(
        ["weak-labels", "--mosaics", str(mosaic_dir), "--out", str(out), "--per-class", "40", "--seed", "3",
         "--pixel-size-um", "2.0"]
    )  # fmt: skip
    assert code == 0
    return out


def test_benign_classes_balanced_and_aspecific_matches_all_benign(table_path: Path) -> None:
    table = read_table(table_path)
    counts = {c: int((table.code == c).sum()) for c in (*BENIGN_CODES, ASPECIFIC)}
    assert all(counts[c] == 40 for c in BENIGN_CODES)
    assert counts[ASPECIFIC] == 200
    assert set(np.unique(table.label)) == {0, 1}
    assert np.array_equal(table.label, (table.code == ASPECIFIC).astype(int))


def test_splits_are_patient_disjoint_and_recorded(table_path: Path) -> None:
    table = read_table(table_path)
    by_split = {s: set(table.select(s).patient) for s in ("train", "val", "test")}
    assert not (by_split["train"] & by_split["val"] or by_split["train"] & by_split["test"])
    assert not by_split["val"] & by_split["test"]
    recorded = table.meta["split"]
    assert len(recorded["train"]["patients"]) == 14
    assert len(recorded["val"]["patients"]) == 2
    assert len(recorded["test"]["patients"]) == 4
    for split, patients in by_split.items():
        assert patients <= set(recorded[split]["patients"])


def test_centre_pixels_carry_the_label_and_patches_fit(table_path: Path, mosaic_dir: Path) -> None:
    table = read_table(table_path)
    half = PATCH // 2
    assert (table.x >= half).all() and (table.y >= half).all()
    assert (table.x + PATCH - half <= SIDE).all() and (table.y + PATCH - half <= SIDE).all()
    maps = {m.image.name: read_labels(m.labels) for m in find_mosaics(mosaic_dir, pixel_size_um=2.0)}
    for name, x, y, code in zip(table.mosaic, table.x, table.y, table.code, strict=True):
        assert maps[name][y, x] == code
