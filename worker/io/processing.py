"""The processing image: the mosaic area-averaged to the model's pixel size, in memory or memory-mapped.

:func:`stream_processing_image` produces it strip by strip, from the top, on a reader thread (libvips
decodes and shrinks one strip at a time, as sequential access allows): the exact pass cuts the first
window row as soon as its rows are in, so reading overlaps the network instead of preceding it.
:func:`processing_image` is the same image, whole, for the callers that need all of it at once.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pyvips

from models.errors import InvalidParameter
from worker.io.mosaic import Mosaic, decode_error

STRIP_ROWS = 128
"""Processing rows decoded per strip: half a window, so the first window row waits for two strips."""


class StreamedImage:
    """A processing image whose rows arrive from the top while it is being used.

    ``rows(n)`` waits for the first ``n`` rows and returns the whole array (rows below ``n`` may still be
    unwritten); ``whole()`` waits for all of it. A decoding error is raised by whichever call waits for a
    row that could not be read. ``seconds`` is the reader's own time, ``waited`` the time callers spent
    waiting for it: their difference is the reading the windows did not wait for.
    """

    def __init__(self, image: pyvips.Image, array: np.ndarray, source: Path) -> None:
        self.array = array
        self.shape: tuple[int, int] = (int(array.shape[0]), int(array.shape[1]))
        self.seconds = 0.0
        self.waited = 0.0
        self._source = source
        self._ready = 0
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, args=(image,), name="image-reader", daemon=True)
        self._thread.start()

    def _read(self, image: pyvips.Image) -> None:
        t0 = time.perf_counter()
        try:
            h, w = self.shape
            region = pyvips.Region.new(image)
            for y in range(0, h, STRIP_ROWS):
                if self._stop.is_set():
                    return
                rows = min(STRIP_ROWS, h - y)
                strip = np.frombuffer(region.fetch(0, y, w, rows), dtype=np.uint8)
                self.array[y : y + rows] = strip.reshape(rows, w)
                with self._changed:
                    self._ready = y + rows
                    self._changed.notify_all()
        except pyvips.Error as exc:
            self._fail(decode_error(self._source, exc))
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
            self._changed.wait_for(lambda: self._ready >= n or self._error is not None)
        self.waited += time.perf_counter() - t0
        if self._ready < n:
            assert self._error is not None
            raise self._error
        return self.array

    def whole(self) -> np.ndarray:
        """The array once every row is in."""
        return self.rows(self.shape[0])

    def close(self) -> None:
        """Stop reading (after the strip being read) and wait for the reader."""
        self._stop.set()
        self._thread.join()


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
    memory-mapped raw file when it exceeds ``budget_bytes``. The caller closes it.

    The input is first cropped to a multiple of the factor (at most factor-1 px are dropped per axis).
    """
    img = _shrunk(mosaic, downsample)
    h, w = img.height, img.width
    array: np.ndarray
    if w * h <= budget_bytes:
        array = np.empty((h, w), dtype=np.uint8)
    else:
        array = np.memmap(workdir / "processing.u8", dtype=np.uint8, mode="w+", shape=(h, w))
    return StreamedImage(img, array, mosaic.source)


def processing_image(mosaic: Mosaic, downsample: int, *, budget_bytes: int, workdir: Path) -> np.ndarray:
    """The whole processing image (:func:`stream_processing_image`, waited for)."""
    streamed = stream_processing_image(mosaic, downsample, budget_bytes=budget_bytes, workdir=workdir)
    try:
        return streamed.whole()
    finally:
        streamed.close()
