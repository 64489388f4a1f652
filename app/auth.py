"""Bearer-token authentication: a token names its owner, and the owner scopes every mosaic and job.

Tokens are compared in constant time and never logged; a failed check says only that the token is missing
or not valid.
"""

from __future__ import annotations

import hmac
import secrets

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


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)
