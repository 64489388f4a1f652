"""HTTP errors: every failure leaves the API as ``{code, message}`` (plus ``field`` when one is at fault).

Domain errors (``models.errors``) are turned into statuses here and only here.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.auth import Unauthorized
from models.errors import InvalidModel, InvalidParameter, RcmSegError
from worker.errors import MosaicTooLarge, UnreadableMosaic, UnsupportedMosaic

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The body of every error response."""

    code: str
    message: str
    field: str | None = None


class NotFound(RcmSegError, LookupError):
    """No such resource for this owner (also what another owner's resources look like)."""

    code = "not_found"


class Conflict(RcmSegError):
    """The resource is in a state that does not allow the request."""

    code = "conflict"


class PayloadTooLarge(RcmSegError, ValueError):
    """The request body is larger than the configured limit."""

    code = "payload_too_large"


class UnsupportedMediaType(RcmSegError, ValueError):
    """The body is not multipart, or the uploaded file is not an image format rcmseg reads."""

    code = "unsupported_media_type"


class FieldError(InvalidParameter):
    """An invalid request field, named."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


STATUS: list[tuple[type[RcmSegError], int]] = [
    (Unauthorized, 401),
    (NotFound, 404),
    (Conflict, 409),
    (PayloadTooLarge, 413),
    (UnsupportedMediaType, 415),
    (UnsupportedMosaic, 415),
    (UnreadableMosaic, 422),
    (MosaicTooLarge, 422),
    (InvalidModel, 422),
    (InvalidParameter, 422),
]

DESCRIPTIONS = {
    401: "Missing or invalid bearer token.",
    404: "No such resource for this owner.",
    409: "The resource's state does not allow this request.",
    413: "The upload is larger than RCMSEG_MAX_UPLOAD_BYTES.",
    415: "Not multipart, not an image format rcmseg reads, or an unsupported band/bit layout.",
    422: "Invalid field, unreadable or truncated image, or more pixels than RCMSEG_MAX_PIXELS.",
    503: "Redis is unreachable or no worker is alive.",
}


def error_responses(
    *statuses: int, also: dict[int | str, dict[str, Any]] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses (plus ``also``, e.g. another success)."""
    entries: dict[int | str, dict[str, Any]] = dict(also or {})
    entries.update({s: {"model": ErrorBody, "description": DESCRIPTIONS[s]} for s in statuses})
    return entries


def status_for(exc: RcmSegError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def error_response(status: int, code: str, message: str, field: str | None = None) -> JSONResponse:
    body = ErrorBody(code=code, message=message, field=field).model_dump(exclude_none=True)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    err = cast(RcmSegError, exc)  # registered for RcmSegError only
    return error_response(status_for(err), err.code, str(err), getattr(err, "field", None))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    errors = cast(RequestValidationError, exc).errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or None
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return error_response(422, InvalidParameter.code, message, field)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    http = cast(StarletteHTTPException, exc)  # registered for HTTPException only
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(http.status_code, codes.get(http.status_code, "http_error"), str(http.detail))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error; the service log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RcmSegError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
