"""Cutting windows out of the processing image, in raster order, on a background thread.

Each window row is a strided view of one strip of the image; no per-window Python work happens apart from
the all-zero check that skips windows outside the scanned area. Batches are produced ahead of the device on
a bounded queue (pinned memory when the device is CUDA) so the network never waits for the producer.
"""

from __future__ import annotations

import mmap
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from worker.engine.windows import WindowGrid


@dataclass(frozen=True)
class PixelBatch:
    """uint8 windows (n, S, S) with their top-left corners, and how many all-zero windows were skipped."""

    pixels: torch.Tensor
    ys: np.ndarray
    xs: np.ndarray
    skipped: int
    seconds: float = 0.0


def _mapping(image: np.ndarray) -> mmap.mmap | None:
    base: object = image
    while isinstance(base, np.ndarray):
        base = base.base
    return base if isinstance(base, mmap.mmap) else None


def release_rows_above(image: np.ndarray, y: int) -> None:
    """Let the kernel drop the pages of rows above ``y`` of a memory-mapped image (no-op in memory).

    Windows are cut top to bottom, so a row no later window needs is never read again; dropping its
    pages keeps the resident memory at one band of the image instead of all of it.
    """
    mapping = _mapping(image)
    if mapping is None or y <= 0:
        return
    length = (y * image.strides[0]) // mmap.PAGESIZE * mmap.PAGESIZE
    if length:
        mapping.madvise(mmap.MADV_DONTNEED, 0, length)


def _strip(image: np.ndarray, y: int, window: int, padded_w: int) -> np.ndarray:
    strip = image[y : y + window]
    if strip.shape[0] == window and strip.shape[1] == padded_w:
        return strip
    out = np.zeros((window, padded_w), dtype=image.dtype)
    out[: strip.shape[0], : strip.shape[1]] = strip
    return out


def iter_pixel_batches(
    image: np.ndarray, grid: WindowGrid, batch_size: int, *, pin: bool = False
) -> Iterator[PixelBatch]:
    """Batches of non-empty windows of ``image`` (H x W uint8) in raster order."""
    s = grid.window
    padded_w = grid.padded_shape[1]
    xs_row = grid.xs
    buf = np.empty((batch_size, s, s), dtype=np.uint8)
    fill, skipped = 0, 0
    ys_acc: list[np.ndarray] = []
    xs_acc: list[np.ndarray] = []
    clock = time.perf_counter()

    def emit() -> PixelBatch:
        pixels = torch.from_numpy(buf[:fill].copy())
        return PixelBatch(
            pixels=pixels.pin_memory() if pin else pixels,
            ys=np.concatenate(ys_acc),
            xs=np.concatenate(xs_acc),
            skipped=skipped,
            seconds=time.perf_counter() - clock,
        )

    for y in grid.ys.tolist():
        release_rows_above(image, y)
        views = np.lib.stride_tricks.sliding_window_view(_strip(image, y, s, padded_w), s, axis=1)[:, xs_row]
        views = views.transpose(1, 0, 2)  # (nx, S, S)
        keep = views.max(axis=(1, 2)) > 0
        skipped += int((~keep).sum())
        kept_x = xs_row[keep]
        kept = views[keep] if not keep.all() else views
        start = 0
        while start < len(kept_x):
            take = min(batch_size - fill, len(kept_x) - start)
            buf[fill : fill + take] = kept[start : start + take]
            ys_acc.append(np.full(take, y, dtype=np.int64))
            xs_acc.append(kept_x[start : start + take])
            fill += take
            start += take
            if fill == batch_size:
                yield emit()
                fill, skipped = 0, 0
                clock = time.perf_counter()
                ys_acc, xs_acc = [], []
    if fill or skipped:
        if not fill:
            ys_acc, xs_acc = [np.zeros(0, dtype=np.int64)], [np.zeros(0, dtype=np.int64)]
        yield emit()


_DONE = object()


def prefetch(batches: Iterator[PixelBatch], depth: int = 3) -> Iterator[PixelBatch]:
    """Run ``batches`` on a background thread, ``depth`` batches ahead; errors surface in the consumer."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_DONE)
        except BaseException as exc:  # handed to the consumer, re-raised there
            q.put(exc)

    thread = threading.Thread(target=produce, name="window-producer", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(PixelBatch, item)
    finally:
        stop.set()
        thread.join(timeout=5)
