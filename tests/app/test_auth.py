"""Bearer tokens name their owner; anything else is a 401 that does not repeat the token. Credentials are
recognised by their decoded names, the same for the refusal of a URL credential and for log redaction."""

from __future__ import annotations

import pytest

from app.auth import (
    Unauthorized,
    credentials_in_query,
    is_credential_name,
    new_token,
    owner_for,
    redact_target,
)

TOKENS = {"alice-token-0123456789abcdef": "alice", "bob-token-0123456789abcdef00": "bob"}


def test_a_token_names_its_owner() -> None:
    assert owner_for("Bearer alice-token-0123456789abcdef", TOKENS) == "alice"
    assert owner_for("bearer  bob-token-0123456789abcdef00 ", TOKENS) == "bob"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Bearer ",
        "Basic YWxpY2U6eA==",
        "alice-token-0123456789abcdef",
        "Bearer alice-token-0123456789abcde",
        "Bearer not-a-token-at-all-xyz",
    ],
)
def test_anything_else_is_unauthorized(header: str | None) -> None:
    with pytest.raises(Unauthorized) as err:
        owner_for(header, TOKENS)
    assert "token-0123" not in str(err.value) and "not-a-token" not in str(err.value)


def test_new_tokens_are_long_and_distinct() -> None:
    tokens = {new_token() for _ in range(10)}
    assert len(tokens) == 10 and all(len(t) >= 40 for t in tokens)


@pytest.mark.parametrize(
    "name",
    ["token", "TOKEN", "access_token", "auth_token", "private_token", "bearer", "jwt", "x-api-key", "API_KEY",
     "apikey", "session_id", "sessionid", "passphrase", "password", "client_secret", "t", "sig", "code",
     "accessToken", "id.token"],
)  # fmt: skip
def test_credential_names_are_recognised(name: str) -> None:
    assert is_credential_name(name)


@pytest.mark.parametrize("name", ["limit", "threshold", "colormap", "transparent_below", "parallel", "step"])
def test_the_apis_own_parameters_are_not_credentials(name: str) -> None:
    assert not is_credential_name(name)


def test_credentials_in_a_query_are_found_by_their_decoded_names() -> None:
    assert credentials_in_query("to%6Ben=x&limit=2") == ["token"]
    assert credentials_in_query("x%2Dapi%2Dkey=1&t=2&colormap=gray") == ["t", "x-api-key"]
    assert credentials_in_query("limit=2&threshold=0.4") == []


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/v1/jobs?to%6Ben=S3CRET&limit=2", "/v1/jobs?to%6Ben=[redacted]&limit=2"),
        ("/v1/jobs?limit=2&jwt=S3CRET#top", "/v1/jobs?limit=2&jwt=[redacted]#top"),
        ("/v1/jobs?x-api-key=S3CRET&t=S3CRET", "/v1/jobs?x-api-key=[redacted]&t=[redacted]"),
        ("/v1/jobs?session%5Fid=S3CRET", "/v1/jobs?session%5Fid=[redacted]"),
        ("/v1/jobs;token=S3CRET", "/v1/jobs;token=[redacted]"),
        ("/v1/jobs%3Btoken%3DS3CRET", "/v1/jobs;token=[redacted]"),  # as uvicorn's access log quotes it
        ("/v1/jobs?limit=10&colormap=gray", "/v1/jobs?limit=10&colormap=gray"),
    ],
)
def test_redaction_uses_the_decoded_names(target: str, expected: str) -> None:
    assert redact_target(target) == expected
