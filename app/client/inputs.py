"""The files a batch works on: mosaic files found in the paths given, and the records of earlier results."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.errors import InvalidParameter
from worker.contract import SUMMARY_FILE
from worker.io.dicom.read import series_base_level

RECORD_FILE = "submit.json"
"""What produced a downloaded result: server, file hash, request, job; written last, after the files."""
MOSAIC_SUFFIXES = frozenset({".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".dcm"})
"""Files a folder argument contributes (the formats the service reads)..."""
LABEL_MAP_STEM = "_labels"
"""... except label maps: ``{id}_labels.png`` beside ``{id}.tif`` is how annotated mosaics (phantoms
among them) are laid out."""


def find_inputs(paths: Sequence[Path]) -> list[Path]:
    """The mosaic files named: files as given, a DICOM series folder by its base level's file, other folders
    by their mosaic files (not recursing, sorted, label maps left out). Two inputs with one name would share
    an output folder, so that is refused."""
    found: list[Path] = []
    for path in paths:
        series = series_base_level(path) if path.is_dir() else None
        if series is not None:
            found.append(series)
        elif path.is_dir():
            inside = sorted(
                p
                for p in path.iterdir()
                if p.is_file()
                and p.suffix.lower() in MOSAIC_SUFFIXES
                and not p.name.startswith(".")
                and not p.stem.endswith(LABEL_MAP_STEM)
            )
            if not inside:
                raise InvalidParameter(f"{path}: no mosaic files ({', '.join(sorted(MOSAIC_SUFFIXES))})")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise InvalidParameter(f"{path}: no such file or folder")
    names: dict[str, Path] = {}
    for path in found:
        other = names.setdefault(mosaic_name(path), path)
        if other != path:
            raise InvalidParameter(f"{other} and {path} would share the output folder {mosaic_name(path)!r}")
    return found


def mosaic_name(path: Path) -> str:
    """The output folder's name for a mosaic file: its name without the extension."""
    return path.stem


def read_record(folder: Path) -> dict[str, Any]:
    """``submit.json`` of a result folder, or ``{}`` when there is none (or it is not readable)."""
    return _read_json(folder / RECORD_FILE)


def read_summary(folder: Path) -> dict[str, Any]:
    return _read_json(folder / SUMMARY_FILE)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
