"""``/healthz`` (the process answers) and ``/readyz`` (Redis answers and a worker is alive). No token."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from app.api.deps import QueueDep
from app.api.schemas import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, summary="Liveness")
def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Redis is unreachable or no worker is alive."}},
    summary="Readiness: Redis reachable and at least one live worker",
)
def readyz(jobs: QueueDep) -> JSONResponse:
    try:
        jobs.redis.ping()
        redis_ok, workers = True, jobs.live_workers()
    except RedisError:
        redis_ok, workers = False, 0
    body = Readiness(ready=redis_ok and workers > 0, redis=redis_ok, workers=workers)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
