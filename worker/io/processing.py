"""The processing image: the mosaic area-averaged to the model's pixel size, in memory or memory-mapped.

:func:`stream_processing_image` produces it strip by strip, from the top, on a reader thread (libvips
decodes and shrinks one strip at a time, as sequential access allows): the exact pass cuts the first
window row as soon as its rows are in, so reading overlaps the network instead of preceding it.
:func:`processing_image` is the same image read whole, for the callers that need all of it at once.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import numpy as np
import pyvips

from models.errors import InvalidParameter
from worker.errors import ExportFailed
from worker.io.mosaic import Mosaic, decode_error

STRIP_ROWS = 128
"""Processing rows decoded per strip: half a window, so the first window row waits for two strips."""


class ReadStopped(RuntimeError):
    """Rows were asked of a processing image closed before they were read."""


class StreamedImage:
    """A processing image whose rows arrive from the top while it is being used.

    ``rows(n)`` waits for the first ``n`` rows and returns the whole array (rows below ``n`` may still be
    unwritten); ``whole()`` waits for all of it. A decoding error is raised by whichever call waits for a
    row that could not be read, and a call still waiting when the image is closed raises ``ReadStopped``.
    ``seconds`` is the reader's own time, ``waited`` the time callers spent waiting for it: their difference
    is the reading the windows did not wait for.

    With ``raw``, the image goes to that file: its space is allocated first (a full disk fails here, as an
    error, not later as a signal on a page of a mapping), strips are written with ``pwrite`` and callers get
    a read-only memory map, as the heatmap's disk sink does.
    """

    def __init__(self, image: pyvips.Image, source: Path, *, raw: Path | None = None) -> None:
        h, w = image.height, image.width
        self.shape: tuple[int, int] = (h, w)
        self.seconds = 0.0
        self.waited = 0.0
        self._source = source
        self._fd: int | None = None
        if raw is None:
            self.array: np.ndarray = np.empty((h, w), dtype=np.uint8)
        else:
            self._fd = _allocated(raw, h * w)
            self.array = np.memmap(raw, dtype=np.uint8, mode="r", shape=(h, w))
        self._ready = 0
        self._error: BaseException | None = None
        self._closed = False
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(image,), name="image-reader", daemon=True)
        self._thread.start()

    def _write(self, y: int, strip: np.ndarray) -> None:
        if self._fd is None:
            self.array[y : y + strip.shape[0]] = strip
            return
        data, offset = memoryview(strip.tobytes()), y * self.shape[1]
        while data:
            written = os.pwrite(self._fd, data, offset)
            data, offset = data[written:], offset + written

    def _read(self, image: pyvips.Image) -> None:
        t0 = time.perf_counter()
        try:
            h, w = self.shape
            region = pyvips.Region.new(image)
            for y in range(0, h, STRIP_ROWS):
                if self._stop.is_set():
                    return
                rows = min(STRIP_ROWS, h - y)
                self._write(y, np.frombuffer(region.fetch(0, y, w, rows), dtype=np.uint8).reshape(rows, w))
                with self._changed:
                    self._ready = y + rows
                    self._changed.notify_all()
        except pyvips.Error as exc:
            self._fail(decode_error(self._source, exc))
        except OSError as exc:
            self._fail(ExportFailed.because(exc))
        except BaseException as exc:  # handed to the waiting caller, raised there
            self._fail(exc)
        finally:
            self.seconds = time.perf_counter() - t0

    def _fail(self, exc: BaseException) -> None:
        with self._changed:
            self._error = exc
            self._changed.notify_all()

    def rows(self, n: int) -> np.ndarray:
        """The array once its first ``n`` rows (at most the height) are in."""
        n = min(n, self.shape[0])
        if self._ready >= n:
            return self.array
        t0 = time.perf_counter()
        with self._changed:
            self._changed.wait_for(lambda: self._ready >= n or self._error is not None or self._closed)
        self.waited += time.perf_counter() - t0
        if self._ready >= n:
            return self.array
        if self._error is not None:
            raise self._error
        raise ReadStopped(f"{self._source.name}: the processing image was closed before row {n} was read")

    def whole(self) -> np.ndarray:
        """The array once every row is in."""
        return self.rows(self.shape[0])

    def close(self) -> None:
        """Stop reading (after the strip being read), wait for the reader, and wake any caller still waiting
        for rows (it gets ``ReadStopped``)."""
        self._stop.set()
        self._thread.join()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        with self._changed:
            self._closed = True
            self._changed.notify_all()


def _allocated(path: Path, size: int) -> int:
    """A new file of ``size`` bytes, its blocks allocated where the file system can: ENOSPC now, not later."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.ftruncate(fd, size)  # a file system without fallocate: a full disk shows on the first write
    except OSError as exc:
        os.close(fd)
        raise ExportFailed.because(exc) from None
    return fd


def rows_of(image: np.ndarray | StreamedImage, n: int) -> np.ndarray:
    """The array of a processing image, once its first ``n`` rows are in."""
    return image.rows(n) if isinstance(image, StreamedImage) else image


def whole_of(image: np.ndarray | StreamedImage) -> np.ndarray:
    """The array of a processing image, once all of it is in."""
    return image.whole() if isinstance(image, StreamedImage) else image


def _shrunk(mosaic: Mosaic, downsample: int) -> pyvips.Image:
    img = mosaic.image
    w, h = img.width // downsample, img.height // downsample
    if w < 1 or h < 1:
        raise InvalidParameter(
            f"{mosaic.source}: {img.width} x {img.height} px is smaller than downsample factor {downsample}"
        )
    if downsample > 1:
        img = img.crop(0, 0, w * downsample, h * downsample).shrink(downsample, downsample)
    return img.cast("uchar") if img.format != "uchar" else img


def stream_processing_image(
    mosaic: Mosaic, downsample: int, *, budget_bytes: int, workdir: Path
) -> StreamedImage:
    """The mosaic area-averaged by an integer factor, read strip by strip on a thread into memory, or into a
    raw file under ``workdir`` read back as a memory map when it exceeds ``budget_bytes``. The caller closes
    it.

    The input is first cropped to a multiple of the factor (at most factor-1 px are dropped per axis).
    """
    img = _shrunk(mosaic, downsample)
    raw = workdir / "processing.u8" if img.width * img.height > budget_bytes else None
    return StreamedImage(img, mosaic.source, raw=raw)


def processing_image(mosaic: Mosaic, downsample: int, *, budget_bytes: int, workdir: Path) -> np.ndarray:
    """The whole processing image at once (libvips' thread pool decodes and shrinks it), in memory or
    memory-mapped from a raw file: for the callers that need all of it before they start."""
    img = _shrunk(mosaic, downsample)
    h, w = img.height, img.width
    try:
        if w * h <= budget_bytes:
            return np.asarray(img.numpy(), dtype=np.uint8).reshape(h, w)
        raw = workdir / "processing.u8"
        img.rawsave(str(raw))
        return np.memmap(raw, dtype=np.uint8, mode="r", shape=(h, w))
    except pyvips.Error as exc:
        raise decode_error(mosaic.source, exc) from None
