"""Every route of the app, in this process on a real Redis, against hostile URLs and HEAD requests.

The routes are read from the app itself (``app.routes``), so a route added later is covered without naming it:
oversized numbers, long segments and encoded separators in every path parameter answer a 4xx, never a 5xx;
HEAD answers as GET does, without a body, on every route that answers GET.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from starlette.routing import Mount

from app.api import create_app
from app.api.paths import INDEX_DIGITS
from app.settings import Settings
from tests.app.api.test_tiles import ALICE, finished_job, mosaic_png
from tests.app.api.test_tiles import settings as settings

PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")

HOSTILE = [
    "9" * 5000,  # past int()'s 4,300-digit limit
    "1" * 4301,
    "1" * (INDEX_DIGITS + 1),  # just past the bound of a path index
    "-1",
    "a" * 8000,  # a long segment
    "%2F..%2F..%2Fetc%2Fpasswd",  # encoded separators
    "%2e%2e",
    "%2e%2e%2f%2e%2e%2fapp",
    "..%5C..%5Cwindows",
    "%00",
    "%ff%fe",
    "x;token=1",
]


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def fill(path: str, values: dict[str, str], default: str) -> str:
    return PARAM.sub(lambda m: values.get(m.group(1), default), path)


def route_templates(app: FastAPI) -> list[tuple[str, set[str]]]:
    """(path template, methods) of every route, and a path under every mount (the viewer's files)."""
    found: list[tuple[str, set[str]]] = []
    for context in iter_route_contexts(app.routes):  # routes of included routers too
        if isinstance(context.original_route, Mount):
            found.append((str(context.path).rstrip("/") + "/{file}", {"GET"}))
        else:
            found.append((str(context.path), set(getattr(context, "methods", None) or {"GET"})))
    return found


def test_no_url_answers_a_server_error(app: FastAPI, client: TestClient) -> None:
    templates = route_templates(app)
    assert len(templates) >= 15, templates
    failures = []
    requests = 0
    for template, methods in templates:
        names = PARAM.findall(template) or ["-"]
        for name in names:
            for hostile in HOSTILE:
                # ``name`` is hostile, every other parameter plausible
                path = fill(template, {name: hostile}, "0")
                for method in sorted(methods - {"HEAD"}):
                    body = {"json": {}} if method == "POST" else {}
                    response = client.request(method, path, headers=ALICE, **body)
                    requests += 1
                    readiness = template == "/readyz" and response.status_code == 503  # no worker here
                    if response.status_code >= 500 and not readiness:
                        failures.append((method, path[:120], response.status_code, response.text[:200]))
    assert failures == [], failures
    assert requests > 300


def test_a_number_past_the_bound_is_a_404(client: TestClient, settings: Settings, tmp_path: Path) -> None:
    mosaic_id = upload(client, tmp_path)
    job_id = finished_job(settings, "alice", mosaic_id, mosaic_png(tmp_path))
    tile = f"/v1/jobs/{job_id}/dzi/heatmap_files/0/0_0.png"
    assert client.get(tile, headers=ALICE).status_code == 200
    for huge in ("9" * 5000, "1" * (INDEX_DIGITS + 1)):
        response = client.get(f"/v1/jobs/{job_id}/dzi/heatmap_files/{huge}/0_0.png", headers=ALICE)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
        response = client.get(f"/v1/mosaics/{mosaic_id}/dzi/mosaic_files/0/{huge}_0.jpeg", headers=ALICE)
        assert response.status_code == 404


def upload(client: TestClient, tmp_path: Path) -> str:
    with mosaic_png(tmp_path).open("rb") as fh:
        response = client.post("/v1/mosaics", files={"file": ("m.png", fh)}, headers=ALICE)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_head_answers_as_get_without_a_body_on_every_get_route(
    app: FastAPI,
    client: TestClient,
    settings: Settings,
    tmp_path: Path,
) -> None:
    mosaic_id = upload(client, tmp_path)
    job_id = finished_job(settings, "alice", mosaic_id, mosaic_png(tmp_path))
    values = {
        "job_id": job_id,
        "mosaic_id": mosaic_id,
        "layer": "heatmap",
        "level": "0",
        "col": "0",
        "row": "0",
        "ext": "png",
        "name": "summary.json",
        "file": "index.html",
    }
    get_routes = [template for template, methods in route_templates(app) if "GET" in methods]
    ok = 0
    for template in get_routes:
        path = fill(template, values, "0")
        got = client.get(path, headers=ALICE)
        head = client.head(path, headers=ALICE)
        assert head.status_code == got.status_code, (path, head.status_code, got.status_code)
        assert head.content == b"", path
        for header in ("content-type", "content-length", "etag", "cache-control"):
            assert head.headers.get(header) == got.headers.get(header), (path, header)
        ok += got.status_code == 200
    assert ok >= 10, f"only {ok} GET routes answered 200"
    anonymous = client.head("/v1/mosaics")
    assert anonymous.status_code == 401 and anonymous.content == b""  # the same gate as GET
    assert client.head("/v1/nothing-here", headers=ALICE).status_code == 404
