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


def upload_image(image: np.ndarray, grid: WindowGrid, device: torch.device) -> torch.Tensor:
    """The processing image on ``device`` once (uint8), zero-padded to the grid's padded shape."""
    hp, wp = grid.padded_shape
    pixels = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    if pixels.shape != (hp, wp):
        pixels = torch.nn.functional.pad(pixels, (0, wp - pixels.shape[1], 0, hp - pixels.shape[0]))
    return pixels


def nonempty_windows(pixels: torch.Tensor, grid: WindowGrid) -> np.ndarray:
    """(rows, cols) of the grid: whether each window holds a non-zero pixel, from one integral image of
    the non-zero pixels on the device (one transfer back, whatever the window count)."""
    s = grid.window
    counts = torch.nn.functional.pad((pixels > 0).to(torch.int32).cumsum(0).cumsum(1), (1, 0, 1, 0))
    ys = torch.as_tensor(grid.ys, device=pixels.device)[:, None]
    xs = torch.as_tensor(grid.xs, device=pixels.device)[None, :]
    inside = counts[ys + s, xs + s] - counts[ys, xs + s] - counts[ys + s, xs] + counts[ys, xs]
    return cast(np.ndarray, (inside > 0).cpu().numpy())


def resident_batches(
    image: np.ndarray, grid: WindowGrid, batch_size: int, *, device: torch.device
) -> Iterator[PixelBatch]:
    """Batches of non-empty windows in raster order, cut on ``device`` from the image uploaded once.

    The windows are a strided view of the image (``as_strided``: one (S, S) view per position, no copy);
    a batch is one index gather from it. No window passes through the host.
    """
    clock = time.perf_counter()
    pixels = upload_image(image, grid, device)
    hp, wp = pixels.shape
    s = grid.window
    views = pixels.as_strided((hp - s + 1, wp - s + 1, s, s), (wp, 1, wp, 1))
    keep = nonempty_windows(pixels, grid).reshape(-1)
    ys = np.repeat(grid.ys, len(grid.xs))
    xs = np.tile(grid.xs, len(grid.ys))
    order = np.flatnonzero(keep)  # raster positions of the kept windows
    seconds = time.perf_counter() - clock
    if not len(order):
        empty = np.zeros(0, dtype=np.int64)
        yield PixelBatch(pixels[:0, :s, :s], empty, empty, skipped=len(keep), seconds=seconds)
        return
    counted = 0  # raster positions whose skips are already reported
    for start in range(0, len(order), batch_size):
        clock = time.perf_counter()
        part = order[start : start + batch_size]
        last = len(keep) if start + batch_size >= len(order) else int(part[-1]) + 1
        skipped = (last - counted) - len(part)
        counted = last
        index_y = torch.as_tensor(ys[part], device=device)
        index_x = torch.as_tensor(xs[part], device=device)
        batch = views[index_y, index_x]
        yield PixelBatch(
            batch, ys[part], xs[part], skipped=skipped, seconds=seconds + time.perf_counter() - clock
        )
        seconds = 0.0
