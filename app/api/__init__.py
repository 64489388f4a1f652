"""The HTTP API: ``create_app`` builds the FastAPI application from the settings.

Routers, one per resource: ``mosaics`` (uploads), ``jobs`` (submit, poll, cancel), ``results`` (Deep Zoom
layers and files of a finished job), ``model_cards`` and ``health``. The API keeps no state of its own:
jobs live in Redis and files in the data folder, so API processes can restart or run side by side.
Before any route, ``app.api.middleware`` answers HEAD as GET, authenticates ``/v1/`` requests from their
headers, checks JSON bodies and adds the security headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from redis import Redis
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from app.api.errors import error_responses, install_error_handlers
from app.api.middleware import (
    PROTECTED_PREFIX,
    SWAGGER_CDN,
    FailureLimiter,
    HeadAsGet,
    RequestGate,
    SecurityHeaders,
)
from app.api.routes import health, jobs, models, mosaics, pyramids, results
from app.api.services.job_queue import JobQueue
from app.settings import Settings, get_settings
from app.storage import Storage
from worker.provenance import package_version

log = logging.getLogger(__name__)

VIEWER_STATIC = Path(__file__).resolve().parent.parent / "viewer" / "static"
"""The viewer page, served at ``/`` when this folder exists (it is built separately)."""

DOCS_PATH = "/docs"
SWAGGER_UI = f"{SWAGGER_CDN}/npm/swagger-ui-dist@5.17.14"
"""Swagger UI for ``/docs`` (only with ``RCMSEG_API_DOCS``), pinned to one release."""


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
    swept = await run_in_threadpool(app.state.storage.sweep_dead_partials)
    if swept:
        log.info("deleted %d partial uploads of API processes that died", swept)
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
        docs_url=None,
        redoc_url=None,
    )
    storage = Storage(settings.data_dir)
    storage.ensure()
    redis = Redis.from_url(
        settings.redis_url.get_secret_value(),
        health_check_interval=30,
        socket_connect_timeout=2,
        socket_timeout=10,
    )
    app.state.settings = settings
    app.state.storage = storage
    app.state.redis = redis
    app.state.jobs = JobQueue(redis, settings, storage)
    app.state.tokens = settings.tokens()
    install_error_handlers(app)
    app.add_middleware(
        RequestGate,
        tokens=app.state.tokens,
        limiter=FailureLimiter(burst=settings.auth_failure_burst, window_s=settings.auth_failure_window_s),
        max_json_bytes=settings.max_json_bytes,
    )
    if settings.cors_origin_list():
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list(),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Location"],
            max_age=600,
        )
    app.add_middleware(SecurityHeaders, docs_path=DOCS_PATH if settings.api_docs else None)
    app.add_middleware(HeadAsGet)  # outermost: everything inside sees the GET it answers
    for module in (health, mosaics, pyramids, jobs, results, models):
        app.include_router(module.router)
    if settings.api_docs:
        _add_docs(app)
    _document_gate(app)
    mount_viewer(app)
    return app


def _add_docs(app: FastAPI) -> None:
    @app.get(DOCS_PATH, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="rcmseg API",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        )


def _document_gate(app: FastAPI) -> None:
    """Add the answers of ``RequestGate`` and of an unreachable queue to every ``/v1/`` operation of the
    OpenAPI schema (routes declare only their own)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for path, operations in schema.get("paths", {}).items():
            if not path.startswith(PROTECTED_PREFIX):
                continue
            for operation in operations.values():
                statuses = [400, 401, 429, 503]
                if "requestBody" in operation:
                    statuses += [413, 422]
                if operation.get("parameters"):
                    statuses.append(422)
                responses = operation.setdefault("responses", {})
                for status, entry in error_responses(*statuses).items():
                    responses.setdefault(str(status), _reference(entry))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _reference(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": entry["description"],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


def mount_viewer(app: FastAPI, folder: Path = VIEWER_STATIC) -> None:
    """Serve the viewer's static files at ``/`` (index.html for ``/``) when they are present.

    Mounted last, so every API route above takes precedence over a file of the same path.
    """
    if folder.is_dir():
        app.mount("/", StaticFiles(directory=folder, html=True), name="viewer")
