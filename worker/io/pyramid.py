"""Deep Zoom pyramids: the mosaic's own (built once per stored mosaic, shared by every job on it) and the
``dzsave`` settings every pyramid of rcmseg uses.

A mosaic's pyramid is written into a temporary folder beside its final one and renamed into place, under an
exclusive lock on a file beside it, so two builders (a prepare job retried while the first still runs, or
the command line beside a worker) never write it at once and a reader sees it whole or not at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyvips

from worker.contract import MOSAIC_LAYER
from worker.io.mosaic import Mosaic

log = logging.getLogger(__name__)

TILE_SIZE = 254
OVERLAP = 1
MOSAIC_Q = 75
"""libvips' default JPEG quality. On speckled RCM mosaics Q85 costs up to 1.5 x the encoding time of Q75 (the
noise keeps more coefficients), for a difference a reader does not see at screen resolution."""


def dzsave(img: pyvips.Image, base: Path, suffix: str | None = None, **kwargs: Any) -> None:
    """``<base>.dzi`` and ``<base>_files/``: 254 px tiles with 1 px overlap, levels down to 1 x 1 px.

    Without ``suffix`` the tiles are libvips' default, JPEG (``.jpeg``, quality ``Q``): measured on this
    project's 12000 px mosaic, naming any suffix (even ``.jpeg``) costs libvips 1.3 to 1.5 x the time of its
    default tile writer, so the JPEG pyramid names none.
    """
    if suffix is not None:
        kwargs["suffix"] = suffix
    img.dzsave(str(base), tile_size=TILE_SIZE, overlap=OVERLAP, depth="onepixel", **kwargs)


def pyramid_ready(folder: Path) -> bool:
    """Whether the pyramid folder ``folder`` is complete (it appears by rename, ``mosaic.dzi`` inside)."""
    return (folder / f"{MOSAIC_LAYER}.dzi").is_file()


@contextlib.contextmanager
def _exclusive(lock: Path) -> Iterator[None]:
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_mosaic_pyramid(mosaic: Mosaic, folder: Path) -> float | None:
    """Write the mosaic's pyramid (``mosaic.dzi``, ``mosaic_files/``, JPEG Q75) as the folder ``folder``.

    Returns the seconds ``dzsave`` took, or ``None`` when the pyramid was already there (built by another
    process while this one waited for the lock).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    with _exclusive(folder.with_name(f".{folder.name}.lock")):
        if pyramid_ready(folder):
            return None
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        try:
            t0 = time.perf_counter()
            dzsave(mosaic.image, tmp / MOSAIC_LAYER, Q=MOSAIC_Q)
            seconds = time.perf_counter() - t0
            shutil.rmtree(folder, ignore_errors=True)  # an incomplete one left by a crash, never a ready one
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("mosaic pyramid of %s built in %.2f s", mosaic.source.name, seconds)
    return seconds
