"""Errors of the mosaic pipeline: inputs it cannot read and jobs that were stopped.

They extend the project's hierarchy (:mod:`models.errors`); the command line and the HTTP API report each by
its ``code``.
"""

from __future__ import annotations

from models.errors import RcmSegError


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


class ExportFailed(RcmSegError, OSError):
    """The results could not be written (a full disk, a read-only or vanished folder)."""

    code = "export_failed"

    @classmethod
    def because(cls, exc: Exception) -> ExportFailed:
        """The OS's (or libvips') reason, never a complaint about the input."""
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc)
        else:
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            reason = lines[-1] if lines else str(exc)
        return cls(f"writing the results failed: {reason}")
