"""``/healthz`` (the process answers) and ``/readyz`` (Redis answers, a worker is alive and the data folder
has room). No token."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from app.api.deps import QueueDep, SettingsDep, StorageDep
from app.api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={
        503: {
            "model": Readiness,
            "description": "Redis is unreachable, no worker is alive, or the data folder is low on space "
            "(`reasons` says which).",
        }
    },
    summary="Readiness: Redis reachable, at least one live worker and room in the data folder",
)
def readyz(jobs: QueueDep, storage: StorageDep, settings: SettingsDep) -> JSONResponse:
    reasons = []
    try:
        jobs.redis.ping()
        redis_ok, workers = True, jobs.live_workers()
    except RedisError:
        redis_ok, workers = False, 0
        reasons.append("Redis is unreachable")
    if redis_ok and workers == 0:
        reasons.append("no live worker")
    free = storage.free_bytes()
    disk_ok = free >= settings.min_free_bytes
    if not disk_ok:
        reasons.append(
            f"low disk space: the data folder has {free} bytes free, less than RCMSEG_MIN_FREE_BYTES "
            f"({settings.min_free_bytes})"
        )
    body = Readiness(ready=not reasons, redis=redis_ok, workers=workers, disk=disk_ok, reasons=reasons)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
