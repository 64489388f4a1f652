"""The service end to end over real HTTP: uvicorn API and worker subprocesses, real Redis, tiny model, CPU.

Tests run in file order and share one service: two workers (``w1``, ``w2``) that the last test kills.
Slow paths wait on observable state (a job running with windows done), never on fixed sleeps.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips
from redis import Redis
from rq.job import Job
from rq.serializers import JSONSerializer

from tests.app.conftest import TOKENS, Service, texture_png, wait_for

pytestmark = pytest.mark.slow

TINY = {"pixel_size_um": 2.0}
"""The tiny model works at 2 um/px: declaring the input 2 um/px too means no downsampling."""
JOB_TIMEOUT_S = 120.0


def upload(client: httpx.Client, path: Path, name: str | None = None) -> httpx.Response:
    with path.open("rb") as fh:
        return client.post("/v1/mosaics", files={"file": (name or path.name, fh)})


def submit(client: httpx.Client, mosaic_id: str, **params: Any) -> httpx.Response:
    return client.post("/v1/jobs", json={"mosaic_id": mosaic_id, **TINY, **params})


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_status(client: httpx.Client, job_id: str, *statuses: str, timeout: float = JOB_TIMEOUT_S) -> dict:
    def reached() -> dict | None:
        body = job(client, job_id)
        return body if body["status"] in statuses else None

    return dict(wait_for(reached, timeout=timeout, what=f"job {job_id} to be {'/'.join(statuses)}"))


def wait_computing(client: httpx.Client, job_id: str, *, attempt: int = 1) -> dict:
    """Until the job runs (attempt ``attempt``) and has finished some windows."""

    def computing() -> dict | None:
        body = job(client, job_id)
        assert body["status"] in ("queued", "running"), body
        started = body["status"] == "running" and body["attempts"] == attempt
        return body if started and (body["windows_done"] or 0) > 0 else None

    return dict(wait_for(computing, timeout=JOB_TIMEOUT_S, what=f"job {job_id} to compute windows"))


@pytest.fixture(scope="module")
def alice(service: Service) -> Iterator[httpx.Client]:
    with service.client("alice") as client:
        yield client


@pytest.fixture(scope="module")
def bob(service: Service) -> Iterator[httpx.Client]:
    with service.client("bob") as client:
        yield client


@pytest.fixture(scope="module")
def tile_id(alice: httpx.Client, real_tile: Path) -> str:
    """The real 16-bit RCM tile, uploaded by alice (1024 x 1024 px)."""
    response = upload(alice, real_tile)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_upload_job_poll_and_tiles_end_to_end(alice: httpx.Client, real_tile: Path, tile_id: str) -> None:
    again = upload(alice, real_tile, "renamed.png")
    assert again.status_code == 200 and again.json()["id"] == tile_id and again.json()["existing"] is True
    mosaic = alice.get(f"/v1/mosaics/{tile_id}").json()
    assert (mosaic["width"], mosaic["height"], mosaic["bands"], mosaic["bit_depth"], mosaic["format"]) == (
        1024,
        1024,
        1,
        16,
        "png",
    )

    created = submit(alice, tile_id, step=64)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    assert created.headers["location"] == f"/v1/jobs/{job_id}"
    done = wait_status(alice, job_id, "finished", "failed")
    assert done["status"] == "finished", done["error"]
    assert done["progress"] == 1.0 and done["windows_done"] == done["windows_total"] == 16 * 16
    assert done["created_at"] and done["started_at"] and done["finished_at"]
    result = done["result"]
    assert result["summary"]["input"]["sha256"] == mosaic["sha256"]
    assert result["summary"]["windows"]["total"] == 256

    # The mosaic's own pyramid (built after the upload) at full resolution; heatmap and mask coloured from
    # the heat at processing resolution.
    heat = result["summary"]["layers"]["heat"]
    assert heat["width"] == result["summary"]["processing"]["width"] and heat["format"] == "png"
    side, heat_top = heat["width"], math.ceil(math.log2(heat["width"]))
    wait_for(
        lambda: alice.get(f"/v1/mosaics/{tile_id}").json()["pyramid"] == "ready",
        timeout=JOB_TIMEOUT_S,
        what="the mosaic's pyramid",
    )
    for layer, ext, content_type, width, top in [
        ("mosaic", "jpeg", "image/jpeg", 1024, 10),
        ("heatmap", "png", "image/png", side, heat_top),
        ("mask", "png", "image/png", side, heat_top),
    ]:
        dzi = alice.get(result["layers"][layer])
        assert dzi.status_code == 200 and dzi.headers["content-type"] == "application/xml"
        assert f'Format="{ext}"' in dzi.text and f'Width="{width}"' in dzi.text
        tile = alice.get(result["layers"][layer].replace(".dzi", f"_files/0/0_0.{ext}"))
        assert tile.status_code == 200 and tile.headers["content-type"] == content_type
        assert "immutable" in tile.headers["cache-control"] and tile.headers["etag"]
        full = pyvips.Image.new_from_buffer(
            alice.get(result["layers"][layer].replace(".dzi", f"_files/{top}/0_0.{ext}")).content, ""
        )
        assert full.width == min(width, 255) and full.height == min(width, 255)  # 254 px + 1 px overlap
    geojson = alice.get(result["geojson"])
    assert (
        geojson.headers["content-type"] == "application/geo+json"
        and geojson.json()["type"] == "FeatureCollection"
    )
    tiff = alice.get(result["heatmap_tiff"])
    assert tiff.headers["content-type"] == "image/tiff"
    assert pyvips.Image.new_from_buffer(tiff.content, "").width == 1024

    # Anything that is not an existing tile of this job is a 404.
    base = f"/v1/jobs/{job_id}/dzi"
    for path in [
        f"{base}/heatmap_files/99/0_0.png",
        f"{base}/heatmap_files/{heat_top}/9_9.png",
        f"{base}/other.dzi",
        f"{base}/heatmap_files/{heat_top}/0_0.tif",
        f"{base}/heatmap_files/{heat_top}/..%2F..%2Fsummary.json",
        f"{base}/..%2F..%2F..%2Fuploads/x.dzi",
        f"/v1/jobs/{job_id}/files/card.json",
        f"/v1/jobs/{job_id}/files/..%2Fheatmap.tif",
    ]:
        missing = alice.get(path)
        assert missing.status_code == 404, path
        assert missing.json()["code"] == "not_found"

    # The same mosaic, model and parameters: the earlier job and its result, not a new computation.
    reused = submit(alice, tile_id, step=64)
    assert reused.status_code == 200 and reused.json()["id"] == job_id and reused.json()["reused"] is True
    assert reused.json()["result"]["summary"] == result["summary"]
    other = submit(alice, tile_id, step=64, threshold=0.9)
    assert other.status_code == 202 and other.json()["id"] != job_id and other.json()["reused"] is False
    assert wait_status(alice, other.json()["id"], "finished", "failed")["status"] == "finished"
    listed = [j["id"] for j in alice.get("/v1/jobs").json()["jobs"]]
    assert listed[:2] == [other.json()["id"], job_id]


def test_owners_are_isolated(
    service: Service, alice: httpx.Client, bob: httpx.Client, real_tile: Path, tile_id: str
) -> None:
    jobs = alice.get("/v1/jobs").json()["jobs"]
    job_id = jobs[0]["id"]
    assert bob.get("/v1/jobs").json()["jobs"] == []
    assert bob.get("/v1/mosaics").json()["mosaics"] == []
    for path in [
        f"/v1/mosaics/{tile_id}",
        f"/v1/jobs/{job_id}",
        f"/v1/jobs/{job_id}/dzi/heatmap.dzi",
        f"/v1/jobs/{job_id}/dzi/heatmap_files/0/0_0.png",
        f"/v1/jobs/{job_id}/files/regions.geojson",
    ]:
        response = bob.get(path)
        assert response.status_code == 404 and response.json()["code"] == "not_found", path
    assert bob.delete(f"/v1/jobs/{job_id}").status_code == 404
    assert bob.delete(f"/v1/mosaics/{tile_id}").status_code == 404
    assert submit(bob, tile_id).status_code == 404
    # Bob's copy of the same bytes is his own mosaic.
    his = upload(bob, real_tile)
    assert his.status_code == 201 and his.json()["id"] != tile_id

    with service.client(None) as anonymous:
        for method, path in [
            ("GET", "/v1/jobs"),
            ("GET", f"/v1/jobs/{job_id}"),
            ("POST", "/v1/mosaics"),
            ("GET", "/v1/models"),
            ("GET", f"/v1/jobs/{job_id}/dzi/heatmap.dzi"),
            ("DELETE", f"/v1/jobs/{job_id}"),
        ]:
            response = anonymous.request(method, path)
            assert response.status_code == 401, (method, path)
            assert (
                response.json()["code"] == "unauthorized" and response.headers["www-authenticate"] == "Bearer"
            )
        for header in ["Bearer wrong-token-0123456789", "Basic YWxpY2U6eA==", "Bearer"]:
            assert anonymous.get("/v1/jobs", headers={"Authorization": header}).status_code == 401
        assert anonymous.get("/healthz").status_code == 200
        ready = anonymous.get("/readyz").json()
        assert ready["ready"] is True and ready["redis"] is True and ready["workers"] >= 2


def test_invalid_job_parameters_name_the_field(alice: httpx.Client, tile_id: str) -> None:
    cases = [
        ({"step": 0}, "step"),
        ({"step": 65}, "step"),  # larger than the tiny model's 64 px window
        ({"threshold": 1.5}, "threshold"),
        ({"sigma": -1}, "sigma"),
        ({"pixel_size_um": 0}, "pixel_size_um"),
        ({"cam": "gradcam"}, "cam"),
        ({"precision": "int8"}, "precision"),
        ({"model": "nosuch"}, "model"),
        ({"model": "../tiny"}, "model"),
        ({"sigma_px": 3}, "sigma_px"),  # unknown field (the name sigma had before)
    ]
    for params, field in cases:
        response = submit(alice, tile_id, **params)
        assert response.status_code == 422, (params, response.text)
        assert response.json()["field"] == field and response.json()["code"] == "invalid_parameter"
    assert alice.post("/v1/jobs", json={"step": 8}).json()["field"] == "mosaic_id"
    assert submit(alice, "0" * 32).status_code == 404


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def test_bad_uploads_are_rejected_while_the_worker_keeps_serving(
    service: Service, alice: httpx.Client, tile_id: str, tmp_path: Path
) -> None:
    running = submit(alice, tile_id, step=12).json()["id"]
    before = wait_computing(alice, running)
    data = Path(service.env["RCMSEG_DATA_DIR"])
    uploads_before = sorted(p.name for p in (data / "uploads" / "alice").iterdir())

    (tmp_path / "notes.tif").write_text("this is a text file, not a TIFF\n" * 50)
    pyvips.Image.black(16, 16, bands=5).tiffsave(str(tmp_path / "five.tif"))
    (tmp_path / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))
    (tmp_path / "zero.png").write_bytes(_png_claiming(0, 0))
    whole = texture_png(tmp_path / "whole.png", 512).read_bytes()
    (tmp_path / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (5 * 1024**2))  # over the 4 MiB limit
    expected = [
        ("notes.tif", 415, "unsupported_media_type"),
        ("five.tif", 415, "unsupported_mosaic"),
        ("bomb.png", 422, "mosaic_too_large"),
        ("zero.png", 422, "unreadable_mosaic"),
        ("truncated.png", 422, "unreadable_mosaic"),
        ("empty.tif", 422, "unreadable_mosaic"),
        ("huge.png", 413, "payload_too_large"),
    ]
    for name, status, code in expected:
        response = upload(alice, tmp_path / name)
        assert (response.status_code, response.json()["code"]) == (status, code), (name, response.text)
        assert str(data) not in response.json()["message"]  # server paths never leak

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while the body streams
        yield b'--xx\r\nContent-Disposition: form-data; name="file"; filename="big.tif"\r\n\r\nII*\0'
        for _ in range(5):
            yield b"\0" * 1024**2
        yield b"\r\n--xx--\r\n"

    streamed = alice.post(
        "/v1/mosaics", content=chunked(), headers={"Content-Type": "multipart/form-data; boundary=xx"}
    )
    assert streamed.status_code == 413, streamed.text
    not_multipart = alice.post("/v1/mosaics", content=whole, headers={"Content-Type": "image/png"})
    assert not_multipart.status_code == 415
    no_file = alice.post("/v1/mosaics", files={"other": ("a.txt", b"not the file field")})
    assert no_file.status_code == 422 and no_file.json()["field"] == "file"

    # Nothing was kept, and the job went on computing the whole time.
    assert sorted(p.name for p in (data / "uploads" / "alice").iterdir()) == uploads_before
    assert list((data / "tmp").iterdir()) == []
    wait_for(
        lambda: job(alice, running)["windows_done"] > before["windows_done"],
        timeout=30,
        what="the running job to make progress",
    )
    assert job(alice, running)["status"] == "running"
    assert alice.delete(f"/v1/jobs/{running}").status_code == 202
    assert wait_status(alice, running, "canceled", "finished", "failed")["status"] == "canceled"


def test_cancel_queued_and_running_jobs_frees_the_workers(alice: httpx.Client, tile_id: str) -> None:
    first, second, third = (submit(alice, tile_id, step=s).json()["id"] for s in (8, 9, 10))
    wait_computing(alice, first)
    wait_computing(alice, second)
    assert job(alice, third)["status"] == "queued"  # both workers are busy
    # Asking again while identical jobs are queued or running gives those jobs, not new ones.
    for job_id, step in ((first, 8), (third, 10)):
        same = submit(alice, tile_id, step=step)
        assert same.status_code == 202 and same.json()["id"] == job_id and same.json()["reused"] is True

    canceled = alice.delete(f"/v1/jobs/{third}")
    assert canceled.status_code == 202 and canceled.json()["status"] == "canceled"
    assert canceled.json()["cancel_requested"] is True

    for job_id in (first, second):
        response = alice.delete(f"/v1/jobs/{job_id}")
        assert response.status_code == 202 and response.json()["cancel_requested"] is True
    for job_id in (first, second):
        body = wait_status(alice, job_id, "canceled", "finished", "failed", timeout=60)
        assert body["status"] == "canceled" and body["error"]["code"] == "canceled"
        assert body["windows_done"] < body["windows_total"]  # stopped between batches, not run to the end
    again = alice.delete(f"/v1/jobs/{first}")
    assert again.status_code == 409 and again.json()["code"] == "conflict"
    # A canceled job is not reused: the same request computes again.
    fresh = submit(alice, tile_id, step=10).json()["id"]
    assert fresh != third
    assert alice.delete(f"/v1/jobs/{fresh}").status_code == 202
    assert wait_status(alice, fresh, "canceled", "finished", "failed", timeout=60)["status"] == "canceled"

    quick = submit(alice, tile_id, step=60).json()["id"]  # the workers are free again
    assert wait_status(alice, quick, "finished", "failed")["status"] == "finished"


def test_api_restart_loses_no_job(service: Service, alice: httpx.Client, tile_id: str) -> None:
    before = {j["id"]: j["status"] for j in alice.get("/v1/jobs").json()["jobs"]}
    job_id = submit(alice, tile_id, step=40).json()["id"]
    service.kill_api()
    service.start_api()
    assert wait_status(alice, job_id, "finished", "failed")["status"] == "finished"
    after = {j["id"]: j["status"] for j in alice.get("/v1/jobs").json()["jobs"]}
    assert after == before | {job_id: "finished"}


def test_killed_worker_job_is_retried_then_failed_with_a_reason(
    service: Service, alice: httpx.Client, tile_id: str
) -> None:
    redis = Redis.from_url(service.env["REDIS_URL"])
    job_id = submit(alice, tile_id, step=11).json()["id"]

    def worker_of(job_id: str) -> str:
        return str(Job.fetch(job_id, connection=redis, serializer=JSONSerializer).worker_name)

    wait_computing(alice, job_id, attempt=1)
    first = worker_of(job_id)
    service.kill_worker(first)  # SIGKILL mid-job: no chance to clean up
    retried = wait_computing(alice, job_id, attempt=2)  # found abandoned, requeued, taken by the other worker
    second = worker_of(job_id)
    assert second != first and retried["status"] == "running"

    service.kill_worker(second)  # and again: no retry is left (RCMSEG_JOB_RETRIES=1)
    failed = wait_status(alice, job_id, "failed", "finished", timeout=60)
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "worker_lost" and "killed" in failed["error"]["message"]
    assert failed["finished_at"] is not None and failed["finished_at"] >= failed["started_at"]


def test_the_service_logs_hold_no_token(service: Service) -> None:
    logs = {p.name: p.read_text(errors="replace") for p in service.logs.iterdir()}
    assert "api.log" in logs and f"w1-{service.tag}.log" in logs
    assert '"level": "info"' in logs["api.log"]  # structured JSON lines
    for name, text in logs.items():
        for token in TOKENS.values():
            assert token not in text, name
