"""Telling DICOM files and series folders apart from other mosaics by their first bytes, without pydicom
(the API probes every upload with it and loads pydicom only for a DICOM one)."""

from __future__ import annotations

from pathlib import Path


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: a 128-byte preamble, then ``DICM``."""
    try:
        with path.open("rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return head[128:132] == b"DICM"


def dicom_files(folder: Path) -> list[Path]:
    """The DICOM Part 10 files of a folder (not recursing), by name."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_dicom_file(p)
    )


def is_dicom_folder(folder: Path) -> bool:
    return folder.is_dir() and bool(dicom_files(folder))
