"""Bearer tokens name their owner; anything else is a 401 that does not repeat the token."""

from __future__ import annotations

import pytest

from app.auth import Unauthorized, new_token, owner_for

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
