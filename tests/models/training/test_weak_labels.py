"""Weak-label extraction: split, balance, centre labels, patches inside the mosaic, NRRD label maps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from app.cli import main
from models.errors import InvalidParameter
from models.labels import ASPECIFIC, BENIGN_CODES
from models.training.weak_labels import (
    PATCH,
    allocate,
    centre_counts,
    class_targets,
    downsample_labels,
    draw_centres,
    plan_draws,
    split_patients,
)
from worker.datasets.patches import (
    PatchDataset,
    build_table,
    cache_mosaics,
    find_mosaics,
    read_labels,
    read_table,
)
from worker.datasets.phantom_files import write_image
from worker.errors import UnreadableMosaic

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


def test_mosaics_contribute_in_proportion_to_their_pixels() -> None:
    counts = np.zeros((3, 7), dtype=np.int64)
    counts[:, 3] = [100, 300, 0]
    counts[:, ASPECIFIC] = [50, 50, 100]
    plan = plan_draws(counts, per_class=8)
    assert plan[:, 3].tolist() == [2, 6, 0]
    assert plan[:, ASPECIFIC].tolist() == [10, 10, 20]
    assert allocate(5, np.array([1.0, 1.0, 1.0])).sum() == 5
    assert class_targets(3) == {1: 3, 2: 3, 3: 3, 4: 3, 5: 3, 6: 15}


def test_split_keeps_class_shares_close_to_70_10_20() -> None:
    rng = np.random.default_rng(1)
    counts = {f"p{i}": rng.integers(0, 1000, 7) for i in range(40)}
    split = split_patients(counts, seed=0)
    assert sorted(split.values()).count("train") == 28
    totals = np.sum(list(counts.values()), axis=0)
    for name, target in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
        share = np.sum([counts[p] for p, s in split.items() if s == name], axis=0)[1:] / totals[1:]
        assert np.all(np.abs(share - target) < 0.08)
    with pytest.raises(InvalidParameter):
        split_patients({"a": np.ones(7), "b": np.ones(7)}, seed=0)


def test_draws_stay_inside_and_on_their_class() -> None:
    labels = np.zeros((700, 800), dtype=np.uint8)
    labels[:, :400] = 2
    labels[300:, 400:] = ASPECIFIC
    draw = draw_centres(labels, {2: 30, ASPECIFIC: 20}, np.random.default_rng(0))
    assert labels[draw.y, draw.x].tolist() == draw.code.tolist()
    assert draw.x.min() >= PATCH // 2 and draw.x.max() <= 800 - PATCH // 2
    assert draw.y.min() >= PATCH // 2 and draw.y.max() <= 700 - PATCH // 2
    assert centre_counts(labels)[2] > 0
    with pytest.raises(InvalidParameter):
        draw_centres(labels, {5: 1}, np.random.default_rng(0))


def test_labels_at_the_microscope_pixel_size_are_downsampled() -> None:
    labels = np.kron(np.array([[1, 6], [3, 0]], dtype=np.uint8), np.ones((4, 4), dtype=np.uint8))
    assert downsample_labels(labels, 4).tolist() == [[1, 6], [3, 0]]


def test_nrrd_label_maps_as_seg3d_exports_them(tmp_path: Path) -> None:
    import nrrd

    labels = np.zeros((40, 60), dtype=np.uint8)
    labels[5:20, 10:50] = 6
    labels[25:, :] = 1
    path = tmp_path / "m_labels.nrrd"
    nrrd.write(str(path), labels[np.newaxis], index_order="C")
    assert np.array_equal(read_labels(path), labels)
    bad = tmp_path / "bad_labels.nrrd"
    nrrd.write(str(bad), np.full((4, 4), 9, dtype=np.uint8), index_order="C")
    with pytest.raises(UnreadableMosaic, match=r"codes must be 0\.\.6"):
        read_labels(bad)


def test_microscope_resolution_mosaics_are_read_at_2_um(tmp_path: Path) -> None:
    """0.5 um/px mosaics and full-resolution label maps (the real-data case) become 2 um/px patches."""
    side = 2800
    image = np.zeros((side, side), dtype=np.uint8)
    image[:, side // 2 :] = 200
    labels = np.zeros((side, side), dtype=np.uint8)
    labels[:, : side // 2 - 200] = 1
    labels[:, side // 2 + 200 :] = ASPECIFIC
    for i in range(3):
        write_image(tmp_path / f"m{i}.tif", image)
        write_image(tmp_path / f"m{i}_labels.png", labels)
    table = build_table(find_mosaics(tmp_path, pixel_size_um=0.5), per_class=2, seed=0)
    assert len(table) == 12 and set(table.split) == {"train", "val", "test"}
    assert table.x.max() <= side // 4 - PATCH // 2 and table.y.max() <= side // 4 - PATCH // 2
    sources = cache_mosaics(table, tmp_path / "cache")
    assert np.load(sources["m0.tif"]).shape == (side // 4, side // 4)
    data = PatchDataset(table, sources, crop=64)
    for i in range(len(data)):
        window, label = data[i]
        assert window.shape == (1, 64, 64) and window.dtype == torch.uint8
        assert int(window[0, 32, 32]) == (200 if label == 1 else 0)
