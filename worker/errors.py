"""Errors of the mosaic pipeline: inputs it cannot read and jobs that were stopped.

They extend the project's hierarchy (:mod:`models.errors`); the command line and the HTTP API report each by
its ``code``.
"""

from __future__ import annotations

import errno
import os

from models.errors import RcmSegError
from worker.contract import ErrorCode


class UnreadableMosaic(RcmSegError, ValueError):
    """The file is not an image, is truncated, or cannot be decoded."""

    code = "unreadable_mosaic"


class UnsupportedMosaic(RcmSegError, ValueError):
    """The image decodes but its band or bit layout is not one rcmseg processes."""

    code = "unsupported_mosaic"


class MosaicTooLarge(RcmSegError, ValueError):
    """The image has more pixels than the configured limit (decompression-bomb guard)."""

    code = "mosaic_too_large"


class JobCanceled(RcmSegError):
    """Raised between batches when the caller asked the engine to stop."""

    code = "canceled"


NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""A full disk, an exhausted quota, a file size limit."""
SYSTEM_REASONS = (*sorted(NO_SPACE), errno.EROFS, errno.EACCES, errno.ENOENT, errno.EIO)
"""System errors recognised by their text in a libvips message (which gives no errno)."""


class ExportFailed(RcmSegError, OSError):
    """The results could not be written (a full disk, a read-only or vanished folder)."""

    code = "export_failed"

    @classmethod
    def because(cls, exc: Exception) -> ExportFailed:
        """The OS's (or libvips') reason, never a complaint about the input nor a server path. libvips
        reports a full disk among a dozen lines that end in "Unknown error -1", so its text is searched
        for the system's own reasons first."""
        code: int | None
        if isinstance(exc, OSError) and exc.errno is not None:
            reason = exc.strerror or os.strerror(exc.errno)
            code = exc.errno
        else:
            text = str(exc)
            code = next((c for c in SYSTEM_REASONS if os.strerror(c) in text), None)
            lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
            plain = [line for line in lines if "/" not in line and "Unknown error" not in line]
            reason = os.strerror(code) if code is not None else (plain or lines or [text])[-1]
        if code in NO_SPACE:
            return cls(f"writing the results failed: not enough space in the data folder ({reason})")
        return cls(f"writing the results failed: {reason}")


class BandMismatch(RcmSegError, ValueError):
    """A band file that the merge of a job shared out over workers must not use: another job's, another
    run's, or one that does not cover the rows it claims."""

    code = ErrorCode.BAND_MISMATCH.value
