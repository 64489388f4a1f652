"""Cutting windows out of the processing image, in raster order.

Each window row is a strided view of one strip of the image; the all-zero windows outside the scanned area
are found from the strip's non-zero columns, with no per-window Python work. A window row is looked at as
soon as its rows are in, so a processing image still being read (:class:`StreamedImage`) feeds the network
from its first strips. On the CPU a background thread cuts batches ahead of the device on a bounded queue;
on a GPU the rows go up to the device as they are needed and windows are cut there.
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
from worker.io.processing import StreamedImage, rows_of


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


def row_keep(strip: np.ndarray, xs: np.ndarray, window: int) -> np.ndarray:
    """Which windows of one window row (its ``window`` rows, padded) hold a non-zero pixel: those whose
    columns include one with a non-zero pixel, from one prefix sum over the strip's columns."""
    columns = np.concatenate(([0], np.cumsum(strip.any(axis=0), dtype=np.int64)))
    return cast(np.ndarray, columns[xs + window] > columns[xs])


@dataclass(frozen=True)
class Positions:
    """One batch's window corners in raster order, and how many all-zero windows were skipped before it."""

    ys: np.ndarray
    xs: np.ndarray
    skipped: int


def batch_positions(
    image: np.ndarray | StreamedImage, grid: WindowGrid, batch_size: int
) -> Iterator[Positions]:
    """The non-empty windows of ``image``, ``batch_size`` at a time in raster order; each window row is
    looked at once its rows are in (a streamed image is still being read below it)."""
    s = grid.window
    padded_w = grid.padded_shape[1]
    xs_row = grid.xs
    fill, skipped = 0, 0
    ys_acc: list[np.ndarray] = []
    xs_acc: list[np.ndarray] = []
    for y in grid.ys.tolist():
        keep = row_keep(_strip(rows_of(image, y + s), y, s, padded_w), xs_row, s)
        skipped += int((~keep).sum())
        kept_x = xs_row[keep]
        start = 0
        while start < len(kept_x):
            take = min(batch_size - fill, len(kept_x) - start)
            ys_acc.append(np.full(take, y, dtype=np.int64))
            xs_acc.append(kept_x[start : start + take])
            fill += take
            start += take
            if fill == batch_size:
                yield Positions(np.concatenate(ys_acc), np.concatenate(xs_acc), skipped)
                fill, skipped, ys_acc, xs_acc = 0, 0, [], []
    if fill or skipped:
        empty = [np.zeros(0, dtype=np.int64)]
        yield Positions(np.concatenate(ys_acc or empty), np.concatenate(xs_acc or empty), skipped)


def iter_pixel_batches(
    image: np.ndarray | StreamedImage, grid: WindowGrid, batch_size: int, *, pin: bool = False
) -> Iterator[PixelBatch]:
    """Batches of non-empty windows of ``image`` (H x W uint8) in raster order, cut on the host."""
    s = grid.window
    padded_w = grid.padded_shape[1]
    clock = time.perf_counter()
    for batch in batch_positions(image, grid, batch_size):
        array = rows_of(image, 0)
        pixels = np.empty((len(batch.ys), s, s), dtype=np.uint8)
        for y in np.unique(batch.ys).tolist():
            row = batch.ys == y
            strip = _strip(array, y, s, padded_w)
            views = np.lib.stride_tricks.sliding_window_view(strip, s, axis=1)  # (S, W - S + 1, S)
            pixels[row] = views[:, batch.xs[row]].transpose(1, 0, 2)
        if len(batch.ys):
            release_rows_above(array, int(batch.ys[-1]))  # later windows start at or below it
        tensor = torch.from_numpy(pixels)
        yield PixelBatch(
            pixels=tensor.pin_memory() if pin else tensor,
            ys=batch.ys,
            xs=batch.xs,
            skipped=batch.skipped,
            seconds=time.perf_counter() - clock,
        )
        clock = time.perf_counter()


_DONE = object()


def prefetch(batches: Iterator[PixelBatch], depth: int = 3) -> Iterator[PixelBatch]:
    """Run ``batches`` on a background thread, ``depth`` batches ahead; errors surface in the consumer."""
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        """Hand ``item`` over unless the consumer has gone (then nobody would take it)."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in batches:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the consumer, re-raised there
            put(exc)

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


def resident_batches(
    image: np.ndarray | StreamedImage, grid: WindowGrid, batch_size: int, *, device: torch.device
) -> Iterator[PixelBatch]:
    """Batches of non-empty windows in raster order, cut on ``device`` from the image uploaded there.

    Rows go up as the batches need them (a streamed image is still being read below), each once; the
    windows are a strided view of the device image (``as_strided``: one (S, S) view per position, no
    copy) and a batch is one index gather from it. No window passes through the host.
    """
    clock = time.perf_counter()
    hp, wp = grid.padded_shape
    h, w = image.shape
    s = grid.window
    pixels = torch.zeros((hp, wp), dtype=torch.uint8, device=device)
    views = pixels.as_strided((hp - s + 1, wp - s + 1, s, s), (wp, 1, wp, 1))
    uploaded = 0
    for batch in batch_positions(image, grid, batch_size):
        if not len(batch.ys):
            yield PixelBatch(pixels[:0, :s].reshape(0, s, s), batch.ys, batch.xs, batch.skipped)
            continue
        needed = min(int(batch.ys[-1]) + s, h)
        if needed > uploaded:
            rows = rows_of(image, needed)[uploaded:needed]
            pixels[uploaded:needed, :w].copy_(torch.from_numpy(np.ascontiguousarray(rows)))
            uploaded = needed
        index_y = torch.as_tensor(batch.ys, device=device)
        index_x = torch.as_tensor(batch.xs, device=device)
        yield PixelBatch(
            views[index_y, index_x],
            batch.ys,
            batch.xs,
            skipped=batch.skipped,
            seconds=time.perf_counter() - clock,
        )
        clock = time.perf_counter()
