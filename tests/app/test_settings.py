"""Settings from the environment: required values, token parsing, secrets kept out of reprs."""

from __future__ import annotations

import pytest

from app.settings import Settings, WorkerSettings, load_settings, parse_tokens
from models.errors import InvalidParameter

TOKEN = "alice-token-0123456789abcdef"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("RCMSEG_") or name == "REDIS_URL":
            monkeypatch.delenv(name)


def test_required_values_refuse_to_start_naming_the_variables() -> None:
    with pytest.raises(InvalidParameter) as err:
        load_settings(Settings)
    assert "REDIS_URL is not set" in str(err.value) and "RCMSEG_API_TOKENS is not set" in str(err.value)
    with pytest.raises(InvalidParameter, match="REDIS_URL is not set"):
        load_settings(WorkerSettings)


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2-password@localhost:6379/0")
    monkeypatch.setenv("RCMSEG_API_TOKENS", f"alice:{TOKEN}, bob:bob-token-0123456789abcdef ")
    monkeypatch.setenv("RCMSEG_MAX_UPLOAD_BYTES", "1000")
    monkeypatch.setenv("RCMSEG_CORS_ORIGINS", "https://viewer.example, https://other.example")
    settings = load_settings(Settings)
    assert settings.max_upload_bytes == 1000
    assert settings.tokens() == {TOKEN: "alice", "bob-token-0123456789abcdef": "bob"}
    assert settings.cors_origin_list() == ["https://viewer.example", "https://other.example"]
    assert settings.max_pixels == 2 * 12000 * 12000 and settings.retention_s == 7 * 24 * 3600
    # Neither the tokens nor the Redis password show in a repr that could end up in a log.
    assert TOKEN not in repr(settings) and "hunter2" not in repr(settings) and "hunter2" not in str(settings)


def test_out_of_range_values_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://localhost")
    monkeypatch.setenv("RCMSEG_JOB_HEARTBEAT_S", "0")
    with pytest.raises(InvalidParameter, match="RCMSEG_JOB_HEARTBEAT_S"):
        load_settings(WorkerSettings)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "holds no"),
        ("alice", "not 'owner:token'"),
        ("alice:", "not 'owner:token'"),
        ("../x:" + "t" * 20, "owner name"),
        ("alice:short", "shorter than 16"),
        (f"alice:{TOKEN},bob:{TOKEN}", "used twice"),
    ],
)
def test_bad_token_lists_are_refused_without_echoing_tokens(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as err:
        parse_tokens(raw)
    assert TOKEN not in str(err.value) and "short" not in str(err.value).replace("shorter", "")
