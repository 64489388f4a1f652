"""Logs of the service processes: one format per output, the same for ``serve``, the API and the workers.

``text`` is one readable line per record (time, level, logger, message, ``key=value`` context); ``json`` is
one object per line with ``ts``, ``level``, ``logger``, ``msg``, the ``extra`` values a call passed, and
``exc`` for a traceback. ``auto`` (the default, ``RCMSEG_LOG_FORMAT``) picks text when stderr is a terminal
and JSON otherwise; a child process started by ``rcmseg serve`` writes to the same stderr, so it picks the
same. Nothing here reads request headers, so tokens cannot reach the log; query parameters that look like
credentials are redacted from access-log lines.
"""

from __future__ import annotations

import json
import logging
import logging.config
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from app.auth import redact_target

LogFormat = Literal["auto", "text", "json"]

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "color_message",
}


def redact_query(target: str) -> str:
    """``/v1/jobs?token=abc&limit=2`` -> ``/v1/jobs?token=[redacted]&limit=2``: every parameter whose
    decoded name the API takes for a credential (``app.auth``, which also refuses them on its routes)."""
    return redact_target(target)


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {
        key: value if isinstance(value, str | int | float | bool | None) else repr(value)
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_context(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    """``15:04:05 WARNING app.cli.serve: the API exited (killed by signal 9); restarting it  pid=123``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        context = _context(record)
        if context:
            line += "  " + " ".join(f"{k}={v}" for k, v in context.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class RedactAccessLog(logging.Filter):
    """Redacts credential-like query parameters from uvicorn's access-log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_query(args[2]), *args[3:])
        return True


def resolve_format(fmt: LogFormat, stream: Any = None) -> Literal["text", "json"]:
    if fmt != "auto":
        return fmt
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return "text" if isatty is not None and isatty() else "json"


def log_config(level: str = "INFO", fmt: LogFormat = "auto", *, access_log: bool = False) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` dictionary (also given to uvicorn, so its processes log alike)."""
    formatter = JsonFormatter if resolve_format(fmt) == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"service": {"()": f"{__name__}.{formatter.__name__}"}},
        "filters": {"redact": {"()": f"{__name__}.RedactAccessLog"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "service", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {
                "handlers": [],
                "propagate": True,
                "filters": ["redact"],
                "level": "INFO" if access_log else "WARNING",
            },
            "pyvips": {"level": "ERROR"},
        },
    }


def use_logs(level: str = "INFO", fmt: LogFormat = "auto", *, access_log: bool = False) -> None:
    """Configure this process's logging (replacing whatever was set up before)."""
    for handler in list(logging.root.handlers):
        logging.root.removeHandler(handler)
    logging.config.dictConfig(log_config(level, fmt, access_log=access_log))
