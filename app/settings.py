"""Service settings, read once from the environment (``RCMSEG_`` prefix, plus ``REDIS_URL``).

``WorkerSettings`` is what a worker process needs; ``Settings`` adds what only the HTTP API needs (tokens,
CORS). Values without defaults are required: ``rcmseg api`` and ``rcmseg worker`` refuse to start without
them. ``rcmseg serve`` (the embedded default) fills the two required values itself when they are unset: it
starts a private Redis and generates a token, then hands both to the processes it starts.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.errors import InvalidParameter
from worker.io.zoo import DEFAULT_MODEL, DEFAULT_ZOO

OWNER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
"""Owner names become folder names under the data folder, so they are kept to a safe alphabet."""

DAY_S = 24 * 3600

S = TypeVar("S", bound="LogSettings")


class LogSettings(BaseSettings):
    """How every service process logs (also read by ``rcmseg serve``, which needs no other setting)."""

    model_config = SettingsConfigDict(env_prefix="RCMSEG_", extra="ignore", frozen=True)

    log_format: Literal["auto", "text", "json"] = Field(
        "auto",
        description="`text` (readable lines), `json` (one object per line) or `auto`: text when stderr is "
        "a terminal, JSON otherwise.",
    )
    access_log: bool = Field(False, description="Log one line per HTTP request (the API).")


class WorkerSettings(LogSettings):
    """What API and workers share: where Redis and the data live, limits, timeouts and retention."""

    redis_url: SecretStr = Field(
        validation_alias=AliasChoices("REDIS_URL", "RCMSEG_REDIS_URL"),
        description="Redis shared by API and workers (may hold a password, so it is kept secret). Required; "
        "`rcmseg serve` starts a private one if unset.",
    )
    data_dir: Path = Field(
        Path("data"),
        description="Uploads, results and (embedded default) the Redis files. Shared by API and workers.",
    )
    model_zoo: Path = Field(DEFAULT_ZOO, description="Folder of model folders; a job names one of them.")
    default_model: str = Field(DEFAULT_MODEL, min_length=1, description="Model used when a job names none.")
    queue: str = Field("rcmseg", pattern=r"^[A-Za-z0-9_.-]+$", description="RQ queue name.")
    max_upload_bytes: int = Field(2 * 1024**3, ge=1, description="Largest accepted upload body.")
    max_pixels: int = Field(2 * 12000 * 12000, ge=1, description="Largest accepted mosaic (width x height).")
    min_free_bytes: int = Field(
        256 * 1024**2,
        ge=0,
        description="Free space the data folder keeps: an upload that would leave less is refused (507 "
        "insufficient_storage) before a byte of it is written, one that fills the disk while it streams is "
        "refused and deleted, and /readyz answers 503 while less is free.",
    )
    job_timeout_s: int = Field(3600, ge=10, description="A job running longer than this fails.")
    job_heartbeat_s: int = Field(
        30,
        ge=2,
        description="A running job whose worker sent no heartbeat for this long is declared abandoned "
        "(its worker died) and is retried or failed. A worker heartbeats several times per period from a "
        "thread of its own while a job runs, whatever the engine is doing.",
    )
    job_retries: int = Field(
        1, ge=0, le=10, description="Extra attempts for a job whose worker died mid-job."
    )
    retention_s: int = Field(
        7 * DAY_S,
        ge=60,
        description="Uploads, results and job records unused for this long are deleted.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="Where workers run the network.")
    batch_size: int | None = Field(
        None, ge=1, description="Windows per batch; default depends on the device."
    )
    memory_budget_bytes: int = Field(
        128 * 1024**2, ge=1024**2, description="Above this, the engine memory-maps its working images."
    )
    default_parallel: int = Field(
        1,
        ge=1,
        le=64,
        description="Workers a job is shared out over when it does not say (`parallel`): bands of window "
        "rows computed by separate workers and merged into one result.",
    )
    compile: Literal["auto", "on", "off"] = Field(
        "auto",
        description="torch.compile the CAM pass at worker start (warm-up logged apart from jobs): auto is on "
        "for CUDA workers and off on the CPU, where compiling costs more than it saves.",
    )

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def results_dir(self) -> Path:
        return self.data_dir / "results"


class Settings(WorkerSettings):
    """Everything the HTTP API needs."""

    api_tokens: SecretStr = Field(
        description="Comma-separated `owner:token` pairs; the owner name scopes mosaics and jobs. Required; "
        "`rcmseg serve` generates one token if unset."
    )
    cors_origins: str = Field(
        "", description="Comma-separated origins allowed to call the API from a browser."
    )
    sweep_interval_s: float = Field(
        10.0, gt=0, description="How often the API looks for abandoned jobs and expired data."
    )
    max_json_bytes: int = Field(
        64 * 1024, ge=1024, description="Largest JSON request body; larger ones are refused with 413."
    )
    auth_failure_burst: int = Field(
        20,
        ge=1,
        description="Failed authentications one client address, or one presented credential, may make "
        "per `auth_failure_window_s` before its failures are answered 429 (a valid token is never limited).",
    )
    auth_failure_window_s: float = Field(
        60.0,
        gt=0,
        description="The fixed window of `auth_failure_burst`, in seconds: it opens at a key's first "
        "failure, and its count starts again from zero when it ends.",
    )
    api_docs: bool = Field(
        False,
        description="Serve Swagger UI at /docs (its script and styles come from a public CDN, pinned).",
    )

    @field_validator("api_tokens")
    @classmethod
    def _check_tokens(cls, value: SecretStr) -> SecretStr:
        parse_tokens(value.get_secret_value())
        return value

    def tokens(self) -> dict[str, str]:
        """Token -> owner name."""
        return parse_tokens(self.api_tokens.get_secret_value())

    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]


def parse_tokens(raw: str) -> dict[str, str]:
    """``"alice:s3cret,bob:other"`` -> ``{"s3cret": "alice", "other": "bob"}``; errors never echo a token."""
    tokens: dict[str, str] = {}
    for i, item in enumerate(p.strip() for p in raw.split(",")):
        if not item:
            continue
        owner, sep, token = item.partition(":")
        owner, token = owner.strip(), token.strip()
        if not sep or not token:
            raise ValueError(f"RCMSEG_API_TOKENS entry {i + 1} is not 'owner:token'")
        if not OWNER_NAME.match(owner):
            raise ValueError(
                f"RCMSEG_API_TOKENS entry {i + 1}: owner name {owner!r} must match {OWNER_NAME.pattern}"
            )
        if len(token) < 16:
            raise ValueError(
                f"RCMSEG_API_TOKENS entry {i + 1} (owner {owner!r}): token shorter than 16 characters"
            )
        if token in tokens:
            raise ValueError(f"RCMSEG_API_TOKENS entry {i + 1} (owner {owner!r}): token used twice")
        tokens[token] = owner
    if not tokens:
        raise ValueError("RCMSEG_API_TOKENS holds no 'owner:token' pair")
    return tokens


def load_settings(cls: type[S], **values: object) -> S:
    """Settings from the environment (and ``values``, which win); errors name the variables at fault."""
    try:
        return cls(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "settings"
            env = "REDIS_URL" if field.lower() == "redis_url" else f"RCMSEG_{field.upper()}"
            reason = "is not set" if err["type"] == "missing" else err["msg"]
            problems.append(f"{env} {reason}")
        raise InvalidParameter("invalid settings: " + "; ".join(problems)) from None


@lru_cache
def get_settings() -> Settings:
    """The API's settings, read from the environment once per process."""
    return load_settings(Settings)


@lru_cache
def get_log_settings() -> LogSettings:
    """How this process logs, read from the environment once."""
    return load_settings(LogSettings)


@lru_cache
def get_worker_settings() -> WorkerSettings:
    """A worker's settings, read from the environment once per process."""
    return load_settings(WorkerSettings)
