"""Receiving a mosaic upload: the multipart body is streamed to disk, counted and hashed as it arrives.

Nothing is buffered in memory beyond one chunk, the size limit is enforced while the body streams (not after
it was spooled somewhere), and a rejected upload leaves no file behind. The data folder keeps
``min_free_bytes`` free: an announced length that would cut into it is refused before a byte is written,
and a body that gets there while it streams (no length announced, or others writing) or a write that
finds the disk full is refused too (507), its bytes deleted by the caller.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from app.api.errors import FieldError, PayloadTooLarge, UnsupportedMediaType, no_space, out_of_space

FILE_FIELD = "file"
MAX_OTHER_BYTES = 64 * 1024
"""Headers and any form fields besides the file; the file itself is limited by the settings."""
DRAIN_AFTER_LIMIT_BYTES = 16 * 1024**2
"""Past the limit, this much more of the body is read and discarded so the client gets to read the 413."""
FREE_SPACE_CHECK_BYTES = 8 * 1024**2
"""While a body streams, the free space is looked at again after every this many bytes written."""


@dataclass(frozen=True)
class ReceivedFile:
    """An upload written to ``path``: its size, SHA-256 and the file name the client gave."""

    path: Path
    size: int
    sha256: str
    filename: str


def free_bytes(folder: Path) -> int:
    """Bytes free to this process on the file system of ``folder``."""
    return shutil.disk_usage(folder).free


class _FileSink:
    """Writes and hashes the file part's bytes (called from a worker thread, never the event loop); keeps
    ``min_free_bytes`` free on the disk and turns a full disk into ``InsufficientStorage``."""

    def __init__(self, fh: BinaryIO, folder: Path, *, min_free_bytes: int) -> None:
        self.fh = fh
        self.folder = folder
        self.min_free_bytes = min_free_bytes
        self.digest = hashlib.sha256()
        self.unchecked = 0

    def write(self, chunks: list[bytes]) -> None:
        try:
            for chunk in chunks:
                self.fh.write(chunk)
                self.digest.update(chunk)
                self.unchecked += len(chunk)
            if self.unchecked >= FREE_SPACE_CHECK_BYTES:
                self.unchecked = 0
                self.fh.flush()
                if free_bytes(self.folder) < self.min_free_bytes:
                    raise out_of_space(f"for this upload (less than {self.min_free_bytes} bytes left)")
        except OSError as exc:
            if no_space(exc):
                raise out_of_space("for this upload") from None
            raise

    def close(self) -> None:
        """Flush what is buffered (a full disk can show only here)."""
        try:
            self.fh.flush()
        except OSError as exc:
            if no_space(exc):
                raise out_of_space("for this upload") from None
            raise


class _PartCollector:
    """Multipart parser callbacks: picks the bytes of the ``file`` part out of the body."""

    def __init__(self, max_file_bytes: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.header_name = b""
        self.header_value = b""
        self.disposition = b""
        self.in_file = False
        self.in_stray = False
        self.stray_field: str | None = None
        self.files_seen = 0
        self.filename = ""
        self.file_bytes = 0
        self.other_bytes = 0
        self.pending: list[bytes] = []
        self.too_large = False
        self.complete = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.disposition = b""
        self.in_file = self.in_stray = False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._count_other(end - start)
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._count_other(end - start)
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name = self.header_value = b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if options.get(b"name") == FILE_FIELD.encode():
            self.files_seen += 1
            if self.files_seen > 1:
                raise FieldError(FILE_FIELD, "send exactly one file per upload")
            self.in_file = True
            self.filename = Path(options.get(b"filename", b"").decode("utf-8", "replace")).name[:200]
        elif b"filename" in options:  # a file in a field of another name: counted like one, not kept
            self.in_stray = True
            self.stray_field = options.get(b"name", b"").decode("utf-8", "replace")[:100]

    def on_end(self) -> None:
        self.complete = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_stray:
            self.file_bytes += end - start
            self.too_large = self.too_large or self.file_bytes > self.max_file_bytes
            return
        if not self.in_file:
            self._count_other(end - start)
            return
        self.file_bytes += end - start
        if self.file_bytes > self.max_file_bytes:
            self.too_large = True
            self.pending.clear()
            return
        self.pending.append(data[start:end])

    def _count_other(self, n: int) -> None:
        self.other_bytes += n
        if self.other_bytes > MAX_OTHER_BYTES:
            raise FieldError(
                "body", f"form fields and headers besides '{FILE_FIELD}' exceed {MAX_OTHER_BYTES} bytes"
            )


def _boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise UnsupportedMediaType(
            f"send the mosaic as multipart/form-data with the file in the field '{FILE_FIELD}'"
        )
    return options[b"boundary"]


def _missing_file(stray_field: str | None) -> FieldError:
    error = FieldError(FILE_FIELD, "missing")
    message = f"missing field '{FILE_FIELD}': send the mosaic in the multipart field '{FILE_FIELD}'"
    if stray_field is not None:
        message += f" (a file came in the field {stray_field!r})"
    error.args = (message,)
    return error


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"upload exceeds the limit of {max_bytes} bytes (RCMSEG_MAX_UPLOAD_BYTES)")


def _check_room(folder: Path, declared_size: int, min_free_bytes: int) -> None:
    free = free_bytes(folder)
    if declared_size + min_free_bytes > free:
        raise out_of_space(
            f"for this upload ({declared_size} bytes announced, {max(free - min_free_bytes, 0)} available)"
        )


async def receive_upload(
    request: Request, dest: Path, *, max_bytes: int, min_free_bytes: int = 0
) -> ReceivedFile:
    """Stream the ``file`` part of a multipart request into ``dest`` (which the caller deletes on error),
    leaving ``min_free_bytes`` free on its disk."""
    boundary = _boundary(request)
    declared = request.headers.get("content-length")
    declared_size = int(declared) if declared is not None and declared.isdigit() else None
    collector = _PartCollector(max_bytes)
    if declared_size is not None and declared_size > max_bytes + MAX_OTHER_BYTES:
        if declared_size > max_bytes + DRAIN_AFTER_LIMIT_BYTES:
            raise _too_large(max_bytes)  # not worth reading: the connection is closed instead
        collector.too_large = True
    elif declared_size is not None:
        _check_room(dest.parent, declared_size, min_free_bytes)
    parser = MultipartParser(boundary, collector.callbacks())  # type: ignore[arg-type]
    drained = 0
    with dest.open("wb") as fh:
        sink = _FileSink(fh, dest.parent, min_free_bytes=min_free_bytes)
        try:
            async for chunk in request.stream():
                if collector.too_large:
                    drained += len(chunk)
                    if drained > DRAIN_AFTER_LIMIT_BYTES:
                        break
                    continue
                parser.write(chunk)
                if collector.pending:
                    chunks, collector.pending = collector.pending, []
                    await run_in_threadpool(sink.write, chunks)
            if collector.too_large:
                raise _too_large(max_bytes)
            parser.finalize()
            if collector.pending:
                chunks, collector.pending = collector.pending, []
                await run_in_threadpool(sink.write, chunks)
            await run_in_threadpool(sink.close)
        except MultipartParseError as exc:
            raise FieldError("body", f"malformed multipart body ({exc})") from None
    if not collector.complete:
        raise FieldError("body", "multipart body ended before its closing boundary (upload interrupted?)")
    if collector.files_seen == 0:
        raise _missing_file(collector.stray_field)
    return ReceivedFile(
        path=dest, size=collector.file_bytes, sha256=sink.digest.hexdigest(), filename=collector.filename
    )
