"""The service's answers as small frozen dataclasses, built from its JSON bodies.

Only the fields a client acts on are typed; ``raw`` keeps the whole body for anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal

JobStatus = Literal["queued", "running", "finished", "failed", "canceled"]
ENDED: Final = frozenset({"finished", "failed", "canceled"})
"""Statuses a job never leaves."""


def _time(value: Any) -> str | None:
    """An ISO 8601 time, from an ISO string or a Unix time in seconds."""
    if value is None or isinstance(value, str):
        return value
    return datetime.fromtimestamp(float(value), tz=UTC).isoformat()


@dataclass(frozen=True, kw_only=True)
class Mosaic:
    """An uploaded mosaic. ``existing`` is true when the service had these bytes already."""

    id: str
    sha256: str
    filename: str
    width: int
    height: int
    size_bytes: int
    format: str
    created_at: str | None
    existing: bool
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Mosaic:
        return cls(
            id=str(data["id"]),
            sha256=str(data["sha256"]),
            filename=str(data.get("filename", "")),
            width=int(data["width"]),
            height=int(data["height"]),
            size_bytes=int(data["size_bytes"]),
            format=str(data.get("format", "")),
            created_at=_time(data.get("created_at")),
            existing=bool(data.get("existing", False)),
            raw=data,
        )


@dataclass(frozen=True)
class JobError:
    """Why a job failed: the service's ``code`` (``unreadable_mosaic``, ``canceled``, ...) and message."""

    code: str
    message: str


@dataclass(frozen=True, kw_only=True)
class Job:
    """A job as the service last reported it. ``reused`` is true in the answer to a submission that the
    service matched to an earlier identical job (same mosaic, model and parameters)."""

    id: str
    status: JobStatus
    mosaic_id: str
    model: str
    params: dict[str, Any]
    reused: bool
    progress: float
    stage: str | None
    eta_s: float | None
    created_at: str | None
    finished_at: str | None
    error: JobError | None
    summary: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        error = data.get("error")
        result = data.get("result")
        return cls(
            id=str(data["id"]),
            status=data["status"],
            mosaic_id=str(data.get("mosaic_id", "")),
            model=str(data.get("model", "")),
            params=dict(data.get("params") or {}),
            reused=bool(data.get("reused", False)),
            progress=float(data.get("progress") or 0.0),
            stage=data.get("stage"),
            eta_s=data.get("eta_s"),
            created_at=_time(data.get("created_at")),
            finished_at=_time(data.get("finished_at")),
            error=JobError(str(error.get("code", "")), str(error.get("message", ""))) if error else None,
            summary=dict(result["summary"]) if result and result.get("summary") is not None else None,
            raw=data,
        )


@dataclass(frozen=True, kw_only=True)
class Model:
    """A model of the service's zoo: ``name`` is what a job's ``model`` names, ``card`` its model card."""

    name: str
    default: bool
    card: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Model:
        return cls(name=str(data["name"]), default=bool(data.get("default")), card=dict(data["card"]))
