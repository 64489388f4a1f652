"""Bearer-token authentication: a token names its owner, and the owner scopes every mosaic and job.

Tokens are compared in constant time and never logged; a failed check says only that the token is missing
or not valid. A token is read from the ``Authorization`` header only. A URL is kept by logs, proxies and
browser histories, so a credential in one is refused (``credentials_in_query``) and redacted from the
access log (``redact_target``): both recognise a credential by the same names (``is_credential_name``),
decoded as the app decodes a query string.
"""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable
from urllib.parse import parse_qsl, quote, unquote, unquote_plus

from models.errors import RcmSegError


class Unauthorized(RcmSegError, PermissionError):
    """No bearer token, or one that matches no owner."""

    code = "unauthorized"


def owner_for(authorization: str | None, tokens: dict[str, str]) -> str:
    """The owner named by an ``Authorization: Bearer <token>`` header value."""
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer <token> header")
    scheme, _, presented = authorization.partition(" ")
    presented = presented.strip()
    if scheme.lower() != "bearer" or not presented:
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    owner = None
    # Compare against every token so the time taken does not depend on which one (if any) matched.
    for token, name in tokens.items():
        if hmac.compare_digest(token.encode(), presented.encode()):
            owner = name
    if owner is None:
        raise Unauthorized("token is not valid")
    return owner


CREDENTIAL_NAMES = frozenset(
    {
        "t",
        "code",
        "key",
        "sig",
        "sid",
        "pwd",
        "pass",
        "auth",
        "authorization",
        "signature",
        "apikey",
        "sessionid",
    }
)
"""Parameter names that are credentials on their own (after ``normalized_name``)."""
CREDENTIAL_WORDS = frozenset(
    {
        "token",
        "secret",
        "password",
        "passwd",
        "passphrase",
        "jwt",
        "bearer",
        "credential",
        "credentials",
        "key",
        "session",
        "auth",
        "signature",
    }
)
"""Words that make a name a credential wherever they stand in it: ``auth_token``, ``x-api-key``,
``session_id``, ``client_secret``."""
CREDENTIAL_PARTS = ("token", "secret", "passw", "apikey", "jwt", "bearer")
"""Pieces that make a name a credential even run together with other words: ``accesstoken``."""
REDACTED = "[redacted]"


def normalized_name(name: str) -> str:
    """A parameter name as it is compared: lower case, ``-`` and ``.`` as ``_``, no surrounding space."""
    return re.sub(r"[-.\s]", "_", name.strip().lower())


def is_credential_name(name: str) -> bool:
    """Whether a (decoded) parameter name names a credential."""
    normal = normalized_name(name)
    words = {w for w in normal.split("_") if w}
    compact = normal.replace("_", "")
    return (
        normal in CREDENTIAL_NAMES
        or compact in CREDENTIAL_NAMES
        or bool(words & CREDENTIAL_WORDS)
        or any(part in compact for part in CREDENTIAL_PARTS)
    )


def credentials_in_query(query: str) -> list[str]:
    """The credential names in a query string, decoded as the app decodes it (``?to%6Ben=`` is ``token``)."""
    return sorted({name for name, _ in parse_qsl(query, keep_blank_values=True) if is_credential_name(name)})


def _redact_pairs(text: str, *, separator: str, decode: Callable[[str], str]) -> str:
    pairs = []
    for pair in text.split(separator):
        name, equals, _value = pair.partition("=")
        if equals and is_credential_name(decode(name)):
            pair = f"{name}={REDACTED}"
        pairs.append(pair)
    return separator.join(pairs)


def _redact_path(path: str) -> str:
    """Path parameters (``/v1/jobs;token=...``), which an access log shows percent-encoded."""
    decoded = unquote(path)
    if ";" not in decoded:
        return path
    segments = []
    for segment in decoded.split("/"):
        head, semicolon, params = segment.partition(";")
        if semicolon:
            segment = head + ";" + _redact_pairs(params, separator=";", decode=unquote)
        segments.append(segment)
    return quote("/".join(segments), safe="/;=[]")


def redact_target(target: str) -> str:
    """A request target with every credential's value replaced by ``[redacted]``: query parameters whose
    decoded name is a credential's, and path parameters likewise; everything else as it was."""
    path, question, rest = target.partition("?")
    query, hash_, fragment = rest.partition("#")
    redacted = _redact_path(path)
    if question:
        redacted += "?" + _redact_pairs(query, separator="&", decode=unquote_plus)
    return redacted + hash_ + fragment


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)
