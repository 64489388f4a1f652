"""The HTTP API: ``create_app`` builds the FastAPI application from the settings.

Routers, one per resource: ``mosaics`` (uploads), ``jobs`` (submit, poll, cancel), ``results`` (Deep Zoom
layers and files of a finished job), ``model_cards`` and ``health``. The API keeps no state of its own:
jobs live in Redis and files in the data folder, so API processes can restart or run side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles
from redis import Redis
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from app.api.errors import install_error_handlers
from app.api.routes import health, jobs, models, mosaics, results
from app.api.services.job_queue import JobQueue
from app.settings import Settings, get_settings
from app.storage import Storage
from worker.provenance import package_version

log = logging.getLogger(__name__)

VIEWER_STATIC = Path(__file__).resolve().parent.parent / "viewer" / "static"
"""The viewer page, served at ``/`` when this folder exists (it is built separately)."""


def _sweep_once(app: FastAPI) -> None:
    settings: Settings = app.state.settings
    app.state.jobs.reap_abandoned()
    app.state.storage.sweep(
        max_age_s=settings.retention_s, stale_work_s=settings.job_timeout_s + 2 * settings.job_heartbeat_s
    )


async def _sweeper(app: FastAPI) -> None:
    """Periodically fail or retry abandoned jobs and delete expired data."""
    while True:
        try:
            await run_in_threadpool(_sweep_once, app)
        except (RedisError, OSError) as exc:
            log.warning("sweep failed, will try again: %s", exc)
        await asyncio.sleep(app.state.settings.sweep_interval_s)


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    task = asyncio.create_task(_sweeper(app))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        app.state.redis.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    """The application; ``settings`` default to the environment's."""
    settings = settings or get_settings()
    app = FastAPI(
        title="rcmseg",
        summary="Segmentation of reflectance confocal microscopy mosaics, as Deep Zoom layers.",
        version=package_version(),
        lifespan=_lifespan,
    )
    storage = Storage(settings.data_dir)
    storage.ensure()
    redis = Redis.from_url(settings.redis_url.get_secret_value(), health_check_interval=30)
    app.state.settings = settings
    app.state.storage = storage
    app.state.redis = redis
    app.state.jobs = JobQueue(redis, settings, storage)
    app.state.tokens = settings.tokens()
    install_error_handlers(app)
    if settings.cors_origin_list():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list(),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Location"],
            max_age=600,
        )
    for module in (health, mosaics, jobs, results, models):
        app.include_router(module.router)
    mount_viewer(app)
    return app


def mount_viewer(app: FastAPI, folder: Path = VIEWER_STATIC) -> None:
    """Serve the viewer's static files at ``/`` (index.html for ``/``) when they are present.

    Mounted last, so every API route above takes precedence over a file of the same path.
    """
    if folder.is_dir():
        app.mount("/", StaticFiles(directory=folder, html=True), name="viewer")
