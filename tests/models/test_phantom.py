"""Phantom generator: determinism, label codes, mild atypia left unlabelled, files and the command line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from models.errors import InvalidParameter
from models.labels import LABEL_CODES
from models.phantom import MILD, PhantomParams, phantom_params, render_phantom
from worker.datasets.phantom_files import MANIFEST, MANIFEST_FIELDS, PhantomRun, generate_phantoms

SMALL = PhantomParams(width=420, height=380)


def test_same_seed_and_index_give_identical_mosaics() -> None:
    a = render_phantom(SMALL, seed=7, index=2)
    b = render_phantom(SMALL, seed=7, index=2)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.labels, b.labels)
    c = render_phantom(SMALL, seed=7, index=3)
    assert not np.array_equal(a.image, c.image)


def test_arrays_have_the_requested_shape_and_types() -> None:
    ph = render_phantom(SMALL, seed=1, index=0)
    assert ph.image.shape == ph.labels.shape == ph.texture.shape == (380, 420)
    assert ph.image.dtype == ph.labels.dtype == np.uint8
    assert int(ph.labels.max()) <= max(LABEL_CODES)


def test_every_label_code_occurs_and_mild_atypia_is_never_labelled() -> None:
    seen: set[int] = set()
    for index in range(12):
        ph = render_phantom(SMALL, seed=0, index=index)
        seen |= {int(c) for c in np.unique(ph.labels)}
        assert not ph.labels[ph.texture == MILD].any()
        # a label always names the pattern drawn at that pixel
        labelled = ph.labels > 0
        assert np.array_equal(ph.labels[labelled], ph.texture[labelled])
        # outside the scanned fields the mosaic is black and unlabelled
        outside = ph.texture == 0
        if outside.any():
            assert ph.image[outside].max() <= 3
    assert seen == set(LABEL_CODES)


def test_labelled_fraction_is_partial() -> None:
    ph = render_phantom(PhantomParams(width=700, height=700), seed=3, index=0)
    assert 0.05 < (ph.labels > 0).mean() < 0.8


def test_sizes_are_drawn_in_range_and_validated() -> None:
    sizes = {
        (p.width, p.height)
        for p in (phantom_params(seed=0, index=i, min_side=300, max_side=320) for i in range(5))
    }
    assert all(300 <= w <= 320 and 300 <= h <= 320 for w, h in sizes)
    with pytest.raises(InvalidParameter):
        PhantomParams(width=50, height=400)
    with pytest.raises(InvalidParameter):
        PhantomParams(pixel_size_um=8.0)


def test_files_and_manifest(tmp_path: Path) -> None:
    rows = generate_phantoms(tmp_path, PhantomRun(count=2, seed=4, min_side=400, max_side=420))
    with (tmp_path / MANIFEST).open(newline="") as fh:
        manifest = list(csv.DictReader(fh))
    assert [r["id"] for r in manifest] == [r["id"] for r in rows]
    assert list(manifest[0]) == MANIFEST_FIELDS
    import pyvips

    for row in manifest:
        image = pyvips.Image.new_from_file(str(tmp_path / f"{row['id']}.tif"))
        labels = pyvips.Image.new_from_file(str(tmp_path / f"{row['id']}_labels.png")).numpy()
        assert (image.width, image.height) == (int(row["width"]), int(row["height"]))
        assert image.format == "uchar"
        counts = np.bincount(labels.ravel(), minlength=len(LABEL_CODES))
        assert [int(row[name]) for name in LABEL_CODES.values()] == counts.tolist()
        assert row["patient"] and row["pixel_size_um"] == "2.0"


def test_command_line_rejects_sizes_outside_its_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for sides in (
        ["--min-side-um", "400"],
        ["--max-side-um", "6500"],
        ["--min-side-um", "2000", "--max-side-um", "1000"],
    ):
        code = main(["phantom", "--out", str(tmp_path / "out"), "--count", "1", *sides])
        assert code == 2
        assert "500 <= --min-side-um <= --max-side-um <= 6000 um" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_quick_small_phantom_from_the_command_line(tmp_path: Path) -> None:
    """One microscope field (0.5 mm) a side is the smallest; --max-side-um alone sets both sides."""
    assert main(["phantom", "--out", str(tmp_path / "a"), "--count", "1", "--max-side-um", "500"]) == 0
    assert main(["phantom", "--out", str(tmp_path / "b"), "--count", "2", "--max-side-um", "1000"]) == 0
    for folder, side in (("a", 250), ("b", 500)):
        with (tmp_path / folder / MANIFEST).open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert {(int(r["width"]), int(r["height"])) for r in rows} == {(side, side)}


def test_the_command_line_sizes_are_the_generator_s() -> None:
    from app.cli import phantom as cli
    from models import phantom

    assert (cli.LEAST_SIDE_UM, cli.MIN_SIDE_UM, cli.MAX_SIDE_UM) == (
        phantom.LEAST_SIDE_UM,
        phantom.MIN_SIDE_UM,
        phantom.MAX_SIDE_UM,
    )
