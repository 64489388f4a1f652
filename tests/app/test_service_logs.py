"""Service logs: one format per output (text on a terminal, JSON otherwise) and credential-like query
parameters redacted from access-log lines."""

from __future__ import annotations

import io
import json
import logging

import pytest

from app.service_logs import JsonFormatter, RedactAccessLog, TextFormatter, log_config, redact_query


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, None)
    rec.__dict__.update(extra)
    return rec


def test_auto_is_text_on_a_terminal_and_json_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", Terminal())
    assert log_config()["formatters"]["service"]["()"].endswith("TextFormatter")
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert log_config()["formatters"]["service"]["()"].endswith("JsonFormatter")
    assert log_config(fmt="text")["formatters"]["service"]["()"].endswith("TextFormatter")


def test_both_formats_carry_the_context() -> None:
    rec = record("job %s failed", "abc", code="mosaic_gone")
    assert json.loads(JsonFormatter().format(rec))["code"] == "mosaic_gone"
    line = TextFormatter().format(rec)
    assert "INFO" in line and "job abc failed" in line and "code=mosaic_gone" in line


def test_credential_like_query_parameters_are_redacted() -> None:
    assert redact_query("/v1/jobs?token=abc&limit=2") == "/v1/jobs?token=[redacted]&limit=2"
    assert redact_query("/x?limit=1&access_token=s3cret#frag") == "/x?limit=1&access_token=[redacted]#frag"
    assert redact_query("/x?API_KEY=1&password=2") == "/x?API_KEY=[redacted]&password=[redacted]"
    assert redact_query("/v1/jobs?limit=10") == "/v1/jobs?limit=10"
    rec = record('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/v1/jobs?token=abc", "1.1", 401)
    RedactAccessLog().filter(rec)
    assert "abc" not in rec.getMessage() and "token=[redacted]" in rec.getMessage()
