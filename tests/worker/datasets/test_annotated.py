"""Annotated mosaics: finding them, label maps as annotation tools write them, labels at processing size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.errors import InvalidParameter
from worker.datasets.annotated import (
    AnnotatedMosaic,
    find_mosaics,
    labels_for,
    processing_labels,
    read_labels,
)
from worker.datasets.phantom_files import write_image
from worker.errors import UnreadableMosaic


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


def test_label_maps_are_taken_at_full_or_at_processing_size(tmp_path: Path) -> None:
    labels = np.kron(np.array([[1, 6], [3, 0]], dtype=np.uint8), np.ones((4, 4), dtype=np.uint8))
    write_image(tmp_path / "m.tif", np.zeros((8, 8), dtype=np.uint8))
    write_image(tmp_path / "m_labels.png", labels)
    [mosaic] = find_mosaics(tmp_path, pixel_size_um=0.5)
    assert mosaic == AnnotatedMosaic("m", tmp_path / "m.tif", tmp_path / "m_labels.png", "m", 0.5)
    assert processing_labels(mosaic).tolist() == [[1, 6], [3, 0]]  # full size, downsampled by 4
    assert np.array_equal(labels_for(mosaic, 4, (32, 32)), labels)  # already at the processing size
    with pytest.raises(InvalidParameter, match="label map is 8 x 8, mosaic is 20 x 12"):
        labels_for(mosaic, 4, (12, 20))
