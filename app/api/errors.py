"""HTTP errors: every failure leaves the API as ``{code, message}`` (plus ``field`` when one is at fault).

Domain errors (``models.errors``) are turned into statuses here and only here.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

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


class InsufficientStorage(RcmSegError, OSError):
    """The data folder has no room for what the request would write (a full or over-quota disk)."""

    code = "insufficient_storage"


NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""A full disk, an exhausted quota, a file size limit: the data folder has no room, the request is fine."""


def no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS


def out_of_space(what: str) -> InsufficientStorage:
    return InsufficientStorage(f"not enough space in the data folder {what}; try again once space is freed")


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
    (InsufficientStorage, 507),
]

QUEUE_RETRY_AFTER_S = 5
"""``Retry-After`` of a 503 while Redis is unreachable (``rcmseg serve`` restarts its Redis in seconds)."""

DESCRIPTIONS = {
    400: "A credential in the URL (`credential_in_url`): tokens go in the Authorization header only.",
    401: "Missing or invalid bearer token (`WWW-Authenticate: Bearer`).",
    404: "No such resource for this owner.",
    409: "The resource's state does not allow this request.",
    413: "The upload is larger than RCMSEG_MAX_UPLOAD_BYTES, or a JSON body larger than "
    "RCMSEG_MAX_JSON_BYTES.",
    415: "Not multipart, not an image format rcmseg reads, or an unsupported band/bit layout.",
    422: "Invalid field, body not UTF-8 JSON, unreadable or truncated image, or more pixels than "
    "RCMSEG_MAX_PIXELS.",
    429: "Too many failed authentications from this address (`Retry-After` says when to try again).",
    503: "The job queue (Redis) is unreachable, `queue_unavailable`; `Retry-After` says when to try again.",
    507: "Not enough space in the data folder for the upload (`insufficient_storage`).",
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


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(code=code, message=message, field=field).model_dump(exclude_none=True)
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(body, status_code=status, headers=headers or None)


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    err = cast(RcmSegError, exc)  # registered for RcmSegError only
    return error_response(status_for(err), err.code, str(err), getattr(err, "field", None))


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    errors = cast(RequestValidationError, exc).errors()
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":  # its location is a character offset, not a field
        return error_response(422, InvalidParameter.code, "the request body is not valid JSON")
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    field = ".".join(loc) or None
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return error_response(422, InvalidParameter.code, message, field)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    http = cast(StarletteHTTPException, exc)  # registered for HTTPException only
    codes = {404: "not_found", 405: "method_not_allowed"}
    code = codes.get(http.status_code, "http_error")
    return error_response(http.status_code, code, str(http.detail), headers=http.headers)


async def _queue_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.warning("Redis unreachable on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        503,
        "queue_unavailable",
        "the job queue is unreachable; try again shortly",
        headers={"Retry-After": str(QUEUE_RETRY_AFTER_S)},
    )


async def _client_disconnected(request: Request, _exc: Exception) -> Response:
    """The client went away mid-request (an upload cut short): nothing failed on our side."""
    log.info("client disconnected during %s %s", request.method, request.url.path)
    return Response(status_code=400)  # nobody reads it


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    """A full disk anywhere under a route is a 507 naming the data folder (never its path); any other
    OS error is unexpected."""
    if no_space(exc):
        log.warning("no space left on %s %s: %s", request.method, request.url.path, exc)
        err = out_of_space("for this request")
        return error_response(status_for(err), err.code, str(err))
    return await _unexpected(request, exc)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal error; the service log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RcmSegError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RedisError, _queue_unavailable)
    app.add_exception_handler(ClientDisconnect, _client_disconnected)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(Exception, _unexpected)
