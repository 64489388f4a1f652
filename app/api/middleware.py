"""What every request meets before a route sees it, as plain ASGI so that nothing reads the body first.

- ``HeadAsGet``: a HEAD request is answered as its GET would be, without the body, on every route.
- ``RequestGate``: on ``/v1/`` routes a credential in the URL is refused (400), the bearer token is checked
  from the headers alone (a failed check is answered 429 instead of 401 while its client address or the
  credential it presented has failed too often, see ``FailureLimiter``; a valid token is never limited),
  then a JSON body is read up to ``max_json_bytes`` (413 past it, announced or not) and must be UTF-8
  JSON (422 with a plain message); the route then reads the same bytes again. Multipart uploads stream
  on to their route unread.
- ``SecurityHeaders``: ``nosniff``, a CSP that allows only this service's own scripts and styles, no
  framing, no referrer, on every response; ``Cache-Control: no-store`` on JSON that sets none itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders

from app.api.errors import error_response
from app.auth import Unauthorized, credentials_in_query, owner_for

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROTECTED_PREFIX = "/v1/"
UPLOAD_PATH = "/v1/mosaics"

OPENSEADRAGON_STYLE = (
    "@media (hover: none) {    .openseadragon-canvas:focus {        outline: none !important;    }}"
)
"""The one style element OpenSeadragon (pinned in the Makefile) adds to the page; allowed by its hash."""


def _style_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (
    f"default-src 'none'; script-src 'self'; style-src 'self' {_style_hash(OPENSEADRAGON_STYLE)}; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; manifest-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
"""The viewer's page loads its scripts and styles from this origin only and has no inline ones."""

SWAGGER_CDN = "https://cdn.jsdelivr.net"
DOCS_CSP = (
    f"default-src 'none'; script-src 'self' 'unsafe-inline' {SWAGGER_CDN}; style-src 'self' {SWAGGER_CDN}; "
    "img-src 'self' data: https://fastapi.tiangolo.com; connect-src 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
"""Only ``/docs`` (off unless ``RCMSEG_API_DOCS``): Swagger UI's page has an inline start-up script."""


def _route_path(scope: Scope) -> str:
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path", ""))
    return path[len(root) :] if root and path.startswith(root) else path


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class FailureLimiter:
    """Failed authentications counted per key (a client address, a presented credential) in fixed windows.

    A key's window opens at its first failure and lasts ``window_s``; past ``burst`` failures in it, the
    key is limited until the window ends, and then its count starts again from zero (failures while
    limited do not extend the window). Only failed checks consult it: a request with a valid token is
    never limited, whoever else failed from its address (a hospital's proxy). Tokens are at least 16
    characters (256 bits when generated), so the limit bounds what failing clients cost the service; it
    is in memory, per API process, not a shared quota.
    """

    MAX_KEYS = 10_000

    def __init__(self, *, burst: int, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst = burst
        self.window_s = window_s
        self.clock = clock
        self.windows: OrderedDict[str, tuple[float, int]] = OrderedDict()
        """Key -> (when its window opened, failures in it)."""

    def _current(self, key: str, now: float) -> tuple[float, int] | None:
        window = self.windows.get(key)
        if window is not None and now - window[0] >= self.window_s:
            del self.windows[key]
            return None
        return window

    def retry_after(self, *keys: str) -> int | None:
        """Seconds until every one of ``keys`` may fail again, or ``None`` when none is limited."""
        now = self.clock()
        waits = [
            math.ceil(self.window_s - (now - window[0]))
            for window in (self._current(key, now) for key in keys)
            if window is not None and window[1] >= self.burst
        ]
        return max(1, *waits) if waits else None

    def failed(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            opened, count = self._current(key, now) or (now, 0)
            self.windows[key] = (opened, count + 1)
            self.windows.move_to_end(key)
        while len(self.windows) > self.MAX_KEYS:
            self.windows.popitem(last=False)


def failure_keys(address: str, authorization: str | None) -> list[str]:
    """What a failed authentication is counted against: the client's address, and the credential it
    presented (by digest; nothing of a token is kept)."""
    keys = [f"address:{address}"]
    if authorization:
        keys.append("credential:" + hashlib.sha256(authorization.encode()).hexdigest()[:32])
    return keys


class HeadAsGet:
    """HEAD answered as GET, with GET's headers (``Content-Length`` included) and no body.

    FastAPI routes declare GET alone; this makes HEAD work wherever GET does, with the same
    authentication, without adding a HEAD operation per route to the OpenAPI schema.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_head(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
            elif not message.get("more_body", False):  # the last body message, or a pathsend
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, receive, send_head)


class RequestGate:
    """Authentication, then the JSON body check, before the application reads anything."""

    def __init__(
        self, app: ASGIApp, *, tokens: dict[str, str], limiter: FailureLimiter, max_json_bytes: int
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.limiter = limiter
        self.max_json_bytes = max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        if not path.startswith(PROTECTED_PREFIX) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)  # public routes; CORS preflights carry no token
            return
        in_url = credentials_in_query(scope.get("query_string", b"").decode("latin-1"))
        if in_url:
            message = (
                f"remove the query parameter {in_url[0]!r}: a token is read from the Authorization header "
                "only, and a URL is kept by logs, proxies and browser histories"
            )
            await error_response(400, "credential_in_url", message)(scope, receive, send)
            return
        headers = Headers(scope=scope)
        authorization = headers.get("authorization")
        try:
            owner = owner_for(authorization, self.tokens)
        except Unauthorized as exc:
            await self._refuse(exc, failure_keys(_client(scope), authorization), scope, receive, send)
            return
        scope.setdefault("state", {})["owner"] = owner
        if scope["method"] in ("GET", "HEAD", "DELETE") or (
            path == UPLOAD_PATH and scope["method"] == "POST"
        ):
            await self.app(scope, receive, send)  # an upload streams to its route, which limits it
            return
        await self._json_body(scope, receive, send, headers)

    async def _refuse(
        self, exc: Unauthorized, keys: list[str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        """401, or 429 while one of ``keys`` has failed too often (the failure is then not counted)."""
        wait = self.limiter.retry_after(*keys)
        if wait is None:
            self.limiter.failed(*keys)
            await error_response(401, exc.code, str(exc))(scope, receive, send)
            return
        response = error_response(
            429, "too_many_requests", f"too many failed authentications; retry in {wait} s"
        )
        response.headers["Retry-After"] = str(wait)
        await response(scope, receive, send)

    async def _json_body(self, scope: Scope, receive: Receive, send: Send, headers: Headers) -> None:
        limit = self.max_json_bytes
        too_large = error_response(413, "payload_too_large", f"the JSON body exceeds {limit} bytes")
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # nobody is left to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = _not_json(body, headers.get("content-type"))
        if problem is not None:
            await error_response(422, "invalid_parameter", problem)(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _not_json(body: bytes, content_type: str | None) -> str | None:
    """Why a body that is to be parsed as JSON cannot be, or ``None`` (also for bodies of other types,
    which the route refuses by its own schema)."""
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if not body or not (media == "application/json" or media.endswith("+json")):
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the request body is not UTF-8 text"
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return f"the request body is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    except RecursionError:
        return "the request body is not valid JSON (nested too deeply)"
    return None


class SecurityHeaders:
    """Headers that keep browsers from sniffing, framing, leaking referrers or caching owner data."""

    def __init__(self, app: ASGIApp, *, docs_path: str | None = None) -> None:
        self.app = app
        self.docs_path = docs_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if self.docs_path and _route_path(scope) == self.docs_path else CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Content-Security-Policy", csp)
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if headers.get("content-type", "").startswith("application/json"):
                    headers.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)
