"""The prepare job: build a stored mosaic's Deep Zoom pyramid once, in the background, after its upload.

The API enqueues ``worker.contract.PREPARE_FUNCTION`` by name with ``PrepareJobKwargs`` (paths relative to the
data folder) at the front of the queue, at most one per mosaic at a time (``app.api.services.pyramids``). The
build itself holds a lock beside the pyramid, so even a second job for the same mosaic waits and then finds
it done. A mosaic deleted meanwhile is no error: there is nothing left to prepare.
"""

from __future__ import annotations

import logging
from typing import Any, Unpack

import pyvips

from worker.contract import PrepareJobKwargs
from worker.io.mosaic import open_mosaic
from worker.io.pyramid import build_mosaic_pyramid
from worker.queue.job import current_runtime

log = logging.getLogger(__name__)

MAX_PIXELS = 1 << 40
"""The upload limit was checked when the mosaic was accepted; the pyramid builder does not check again."""


def run_prepare_job(**kwargs: Unpack[PrepareJobKwargs]) -> dict[str, Any]:
    """Build ``<data>/out_dir`` (the pyramid folder) from ``<data>/source``."""
    runtime = current_runtime()
    source, out = runtime.data_dir / kwargs["source"], runtime.data_dir / kwargs["out_dir"]
    if not source.is_file():
        log.info("mosaic %s was deleted before its pyramid was built", source.parent.name)
        return {"out_dir": kwargs["out_dir"], "built": False}
    try:
        seconds = build_mosaic_pyramid(open_mosaic(source, max_pixels=MAX_PIXELS), out)
    except (pyvips.Error, OSError):
        if not source.is_file():  # deleted while the pyramid was written
            return {"out_dir": kwargs["out_dir"], "built": False}
        raise
    return {"out_dir": kwargs["out_dir"], "built": seconds is not None, "seconds": seconds}
