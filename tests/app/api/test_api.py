"""The API in this process (no worker): OpenAPI, error bodies, readiness, CORS, the viewer hook, logs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.api import create_app, mount_viewer
from app.settings import Settings, load_settings
from tests.app.conftest import TOKENS, texture_png
from tests.conftest import REPO

AUTH = {"Authorization": f"Bearer {TOKENS['alice']}"}


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("RCMSEG_API_TOKENS", raising=False)
    return load_settings(
        Settings,
        REDIS_URL=redis_url,
        api_tokens=",".join(f"{o}:{t}" for o, t in TOKENS.items()),
        data_dir=tmp_path / "data",
        model_zoo=tmp_path / "zoo",
        queue="test-api-no-workers",
        cors_origins="https://viewer.example",
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_openapi_documents_every_route_body_and_error(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        ("post", "/v1/mosaics"),
        ("get", "/v1/mosaics"),
        ("get", "/v1/mosaics/{mosaic_id}"),
        ("delete", "/v1/mosaics/{mosaic_id}"),
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs"),
        ("get", "/v1/jobs/{job_id}"),
        ("delete", "/v1/jobs/{job_id}"),
        ("get", "/v1/jobs/{job_id}/dzi/{layer}.dzi"),
        ("get", "/v1/jobs/{job_id}/dzi/{layer}_files/{level}/{col}_{row}.{ext}"),
        ("get", "/v1/jobs/{job_id}/files/{name}"),
        ("get", "/v1/jobs/{job_id}/regions.geojson"),
        ("get", "/v1/jobs/{job_id}/segmentation.dcm"),
        ("get", "/v1/jobs/{job_id}/probability.dcm"),
        ("get", "/v1/mosaics/{mosaic_id}/dzi/mosaic.dzi"),
        ("get", "/v1/mosaics/{mosaic_id}/dzi/mosaic_files/{level}/{col}_{row}.jpeg"),
        ("get", "/v1/models"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    }
    assert {(m, p) for p, ops in paths.items() for m in ops} == expected
    for path, ops in paths.items():
        for method, op in ops.items():
            if path.startswith("/v1/"):
                assert "401" in op["responses"], (method, path)
                assert op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"].endswith(
                    "/ErrorBody"
                )
                assert op.get("security"), (method, path)  # the bearer scheme
    upload = paths["/v1/mosaics"]["post"]
    assert "multipart/form-data" in upload["requestBody"]["content"]
    assert {"201", "200", "413", "415", "422"} <= set(upload["responses"])
    create = paths["/v1/jobs"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/JobCreate")
    assert {"202", "200", "404", "422"} <= set(create["responses"])
    assert "409" in paths["/v1/jobs/{job_id}"]["delete"]["responses"]
    job_fields = spec["components"]["schemas"]["JobOut"]["properties"]
    assert {
        "status",
        "progress",
        "stage",
        "windows_done",
        "windows_total",
        "eta_s",
        "error",
        "result",
    } <= set(job_fields)


def test_errors_are_json_with_a_code(client: TestClient) -> None:
    missing = client.get("/v1/nothing-here", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong_method = client.put("/v1/jobs", headers=AUTH)
    assert wrong_method.status_code == 405 and wrong_method.json()["code"] == "method_not_allowed"
    bad_json = client.post(
        "/v1/jobs",
        headers=AUTH,
        content=b"{not json",
    )
    assert bad_json.status_code == 422 and bad_json.json()["code"] == "invalid_parameter"
    bad_limit = client.get("/v1/jobs?limit=0", headers=AUTH)
    assert bad_limit.status_code == 422 and bad_limit.json()["field"] == "limit"
    assert client.get("/v1/jobs/not-an-id", headers=AUTH).status_code == 404
    assert client.get("/v1/models", headers=AUTH).json() == {"models": []}  # empty zoo


def test_readiness_needs_a_live_worker(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json() == {
        "ready": False,
        "redis": True,
        "workers": 0,
        "disk": True,
        "reasons": ["no live worker"],
    }


def test_readiness_reports_an_unreachable_redis(settings: Settings) -> None:
    broken = settings.model_copy(update={"redis_url": type(settings.redis_url)("redis://127.0.0.1:1/0")})
    with TestClient(create_app(broken)) as test_client:
        ready = test_client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["redis"] is False


def test_cors_allows_only_configured_origins(client: TestClient) -> None:
    def preflight(origin: str) -> dict[str, str]:
        headers = {
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "Authorization",
        }
        return dict(client.options("/v1/jobs", headers=headers).headers)

    assert preflight("https://viewer.example").get("access-control-allow-origin") == "https://viewer.example"
    assert "access-control-allow-origin" not in preflight("https://evil.example")


def test_viewer_is_mounted_at_root_behind_the_api(settings: Settings, tmp_path: Path) -> None:
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<html>viewer</html>")
    app = create_app(settings)
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "name", "") != "viewer"]
    mount_viewer(app, static)
    with TestClient(app) as test_client:
        assert "viewer" in test_client.get("/").text
        assert test_client.get("/healthz").json() == {"status": "ok"}  # API routes still win


def test_tokens_never_reach_the_log(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client.get("/v1/jobs", headers=AUTH)
    client.get("/v1/jobs", headers={"Authorization": "Bearer wrong-token-0123456789abcdef"})
    client.post("/v1/mosaics", headers=AUTH, files={"file": ("x.tif", b"not an image")})
    assert TOKENS["alice"] not in caplog.text and "wrong-token" not in caplog.text


def test_an_upload_declared_far_too_large_is_refused_before_it_is_read(settings: Settings) -> None:
    small = settings.model_copy(update={"max_upload_bytes": 1024})
    with TestClient(create_app(small)) as test_client:
        body = b"x" * (17 * 1024**2)  # past the limit plus what is drained to let a client read the 413
        response = test_client.post(
            "/v1/mosaics", headers=AUTH | {"Content-Type": "multipart/form-data; boundary=b"}, content=body
        )
    assert response.status_code == 413 and response.json()["code"] == "payload_too_large"
    assert list((small.data_dir / "tmp").iterdir()) == []


def test_the_api_never_imports_torch() -> None:
    """The HTTP edge hands work to workers by name; importing it (and the CLI) must not load torch."""
    code = (
        "import sys; import app.api, app.cli, app.cli.processes, app.cli.serve, app.storage; "
        "app.cli.build_parser(); sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0


def test_deployments_sharing_one_redis_keep_their_jobs_apart(
    redis_url: str, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two services on one Redis with different queue names: one owner's job lists do not mix."""
    monkeypatch.delenv("RCMSEG_API_TOKENS", raising=False)
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    mosaic = texture_png(tmp_path / "mosaic.png", 128)
    clients = {}
    for name in ("site-a", "site-b"):
        settings = load_settings(
            Settings,
            REDIS_URL=redis_url,
            api_tokens=",".join(f"{o}:{t}" for o, t in TOKENS.items()),
            data_dir=tmp_path / name,
            model_zoo=zoo,
            default_model="tiny",
            queue=f"test-{name}-{tmp_path.name}",
        )
        clients[name] = TestClient(create_app(settings))
    with clients["site-a"] as site_a, clients["site-b"] as site_b:
        with mosaic.open("rb") as fh:
            uploaded = site_a.post("/v1/mosaics", files={"file": ("m.png", fh)}, headers=AUTH)
        assert uploaded.status_code == 201, uploaded.text
        body = {"mosaic_id": uploaded.json()["id"], "pixel_size_um": 2.0}
        created = site_a.post("/v1/jobs", json=body, headers=AUTH)
        assert created.status_code == 202, created.text
        listed_a = [j["id"] for j in site_a.get("/v1/jobs", headers=AUTH).json()["jobs"]]
        assert created.json()["id"] in listed_a
        assert site_b.get("/v1/jobs", headers=AUTH).json()["jobs"] == []
        assert site_b.get(f"/v1/jobs/{created.json()['id']}", headers=AUTH).status_code == 404


def test_the_job_schema_takes_each_method_parameter_once(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    job = schemas["JobCreate"]["properties"]
    assert "sigma_px" not in job
    assert {"type": "string", "const": "none"} in job["sigma"]["anyOf"][0]["anyOf"]
    assert "maximum" not in str(job["step"])  # at most the model's window, checked against the card
    assert "4096" not in str(job)


def test_a_mosaics_time_is_iso_8601_and_older_records_read_as_such(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    png = texture_png(tmp_path / "m.png", 64)
    with png.open("rb") as fh:
        response = client.post("/v1/mosaics", headers=AUTH, files={"file": ("m.png", fh, "image/png")})
    assert response.status_code == 201, response.text
    created = datetime.fromisoformat(response.json()["created_at"])
    assert created.tzinfo is not None and abs(datetime.now(UTC) - created) < timedelta(hours=1)
    mosaic_id = response.json()["id"]
    [record] = list((settings.data_dir / "uploads").glob(f"*/{mosaic_id}/mosaic.json"))
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "created_at": 1796408594.4}))  # as written before: Unix seconds
    again = client.get(f"/v1/mosaics/{mosaic_id}", headers=AUTH).json()
    assert again["created_at"] == datetime.fromtimestamp(1796408594.4, tz=UTC).isoformat()
    listed = client.get("/v1/mosaics", headers=AUTH).json()["mosaics"]
    assert [m["created_at"] for m in listed] == [again["created_at"]]
