"""``RcmsegClient`` on a fake transport: the service's error words kept, transient errors waited out,
upload progress, whole-or-absent downloads; and the package imports no torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.client import RcmsegClient, ServiceError
from tests.conftest import REPO

JOB = {"id": "a" * 32, "status": "running", "mosaic_id": "b" * 32, "model": "tiny", "params": {}}


def client_of(handler: httpx.MockTransport) -> RcmsegClient:
    return RcmsegClient("http://rcmseg.test/", "token", transport=handler)


def test_errors_keep_the_service_code_message_and_status() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(401, json={"code": "unauthorized", "message": "invalid bearer token"})
        return httpx.Response(502, text="<html>bad gateway</html>")

    with client_of(httpx.MockTransport(answer)) as client:
        with pytest.raises(ServiceError) as refused:
            client.list_models()
        assert (refused.value.code, refused.value.message, refused.value.status) == (
            "unauthorized",
            "invalid bearer token",
            401,
        )
        assert not refused.value.transient
        with pytest.raises(ServiceError) as proxy:
            client.list_mosaics()
        assert (proxy.value.code, proxy.value.status, proxy.value.transient) == ("http_502", 502, True)


def test_unreachable_service_is_a_service_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with client_of(httpx.MockTransport(refuse)) as client, pytest.raises(ServiceError) as err:
        client.get_job("a" * 32)
    assert err.value.code == "unreachable" and err.value.status is None and err.value.transient


def test_wait_for_job_waits_out_a_queue_outage() -> None:
    answers = iter(
        [
            httpx.Response(
                503, json={"code": "queue_unavailable", "message": "x"}, headers={"Retry-After": "0"}
            ),
            httpx.Response(200, json={**JOB, "progress": 0.5}),
            httpx.Response(200, json={**JOB, "status": "finished", "progress": 1.0}),
        ]
    )
    seen: list[float] = []
    with client_of(httpx.MockTransport(lambda _r: next(answers))) as client:
        job = client.wait_for_job(JOB["id"], poll_s=0.01, on_update=lambda j: seen.append(j.progress))
    assert job.status == "finished" and job.ended and seen == [0.5, 1.0]


def test_submit_sends_only_what_is_given(tmp_path: Path) -> None:
    bodies: list[dict[str, object]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(202, json={**JOB, "reused": True})

    with client_of(httpx.MockTransport(answer)) as client:
        assert client.submit_job("b" * 32).reused
        client.submit_job("b" * 32, step=10, sigma="none")
    assert bodies == [{"mosaic_id": "b" * 32}, {"mosaic_id": "b" * 32, "step": 10, "sigma": "none"}]


def test_upload_reports_progress_and_download_leaves_no_partial_file(tmp_path: Path) -> None:
    mosaic = tmp_path / "m.png"
    mosaic.write_bytes(b"\x89PNG" + bytes(300_000))
    body = {
        "id": "c" * 32, "sha256": "0" * 64, "filename": "m.png", "width": 1, "height": 1,
        "size_bytes": 300_004, "format": "png", "created_at": 0.0, "existing": False,
    }  # fmt: skip

    def answer(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert b'filename="m.png"' in request.read()
            return httpx.Response(201, json=body)
        if request.url.path.endswith("/summary.json"):
            return httpx.Response(200, json={"ok": True})
        return httpx.Response(404, json={"code": "not_found", "message": "no such file in this job's result"})

    sent: list[int] = []
    with client_of(httpx.MockTransport(answer)) as client:
        uploaded = client.upload_mosaic(mosaic, on_bytes=sent.append)
        assert uploaded.id == "c" * 32 and uploaded.created_at == "1970-01-01T00:00:00+00:00"
        assert sent[-1] == mosaic.stat().st_size
        with pytest.raises(ServiceError, match="no such file"):
            client.download_result("a" * 32, tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["summary.json"]


def test_the_client_imports_no_torch() -> None:
    code = "import sys, app.client; assert not {'torch', 'timm', 'torchvision'} & set(sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
