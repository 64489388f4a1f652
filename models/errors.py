"""The project's exception hierarchy.

Every user-facing failure is an ``RcmSegError``; each subclass also subclasses the matching builtin so
callers that only know the builtin still catch it. ``code`` is a stable machine-readable name used by the
command line and the HTTP API.
"""

from __future__ import annotations


class RcmSegError(Exception):
    """Base class of every error rcmseg reports to a user."""

    code = "rcmseg_error"


class InvalidParameter(RcmSegError, ValueError):
    """An option or request field is out of range; ``field`` names it where the message does not start
    with its name."""

    code = "invalid_parameter"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidModel(RcmSegError, ValueError):
    """A model folder is missing a field, a file, or holds weights that do not match its architecture."""

    code = "invalid_model"
