"""What the client raises: the service's own error (its ``code`` and ``message``, as it worded them)."""

from __future__ import annotations

from models.errors import RcmSegError

TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
"""Statuses after which the same request may well succeed a little later."""

UNREACHABLE = "unreachable"
"""``code`` of a request that got no HTTP answer at all (refused, reset, timed out)."""


class ServiceError(RcmSegError, RuntimeError):
    """The service refused or failed a request: ``code`` and ``message`` are its own (``{code, message}``
    of the error body), ``status`` the HTTP status (``None`` when the service could not be reached)."""

    def __init__(
        self, code: str, message: str, status: int | None, *, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def transient(self) -> bool:
        """Whether trying again later may succeed (the service or its queue was briefly unavailable)."""
        return self.status is None or self.status in TRANSIENT_STATUSES

    def __repr__(self) -> str:
        return f"ServiceError(code={self.code!r}, message={self.message!r}, status={self.status!r})"
