"""Faults against the real service (uvicorn API and a worker as subprocesses) on a Redis of its own that
the tests kill: the API answers 503 while Redis is down and the worker waits for it; identical concurrent
submissions make one job; a killed worker's job is queued again within seconds; a mosaic deleted under a
queued job fails as ``mosaic_gone``; readiness drops a worker silent for one heartbeat period; results are
as private as uploads (0600 files, 0700 folders)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from redis import Redis
from rq import Queue, SimpleWorker, Worker, worker_registration
from rq.utils import utcformat

from app.api import create_app
from app.settings import Settings, load_settings
from tests.app.conftest import TOKENS, Service, texture_png, upload_id, wait_for
from tests.conftest import free_port
from worker.contract import worker_silence_s, worker_ttl_s
from worker.queue.worker_process import MosaicWorker

pytestmark = pytest.mark.slow

TINY = {"pixel_size_um": 2.0}


class RedisServer:
    """A ``redis-server`` that keeps nothing on disk, on a fixed port so that it can be started again."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("faults-redis"))
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()


@pytest.fixture(scope="module")
def svc(
    service_env: dict[str, str], redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    service = Service(dict(service_env, REDIS_URL=redis_server.url), tmp_path_factory.mktemp("logs"))
    try:
        service.start_worker("w1")
        service.start_api()
        service.wait_workers(1)
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="module")
def alice(svc: Service) -> Iterator[httpx.Client]:
    with svc.client("alice") as client:
        yield client


def job(client: httpx.Client, job_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def wait_status(client: httpx.Client, job_id: str, *statuses: str, timeout: float = 120) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body = job(client, job_id)
        return body if body["status"] in statuses else None

    return dict(wait_for(reached, timeout=timeout, what=f"job {job_id} to be {'/'.join(statuses)}"))


def test_while_redis_is_down_the_api_answers_503_and_the_worker_waits(
    svc: Service, redis_server: RedisServer, alice: httpx.Client, tmp_path: Path
) -> None:
    mosaic = upload_id(alice, texture_png(tmp_path / "a.png", 256))
    before = alice.post("/v1/jobs", json={"mosaic_id": mosaic, **TINY, "step": 60})
    job_id = before.json()["id"]
    wait_status(alice, job_id, "finished")
    data = Path(svc.env["RCMSEG_DATA_DIR"])
    for folder in (data / "results" / "alice", data / "uploads" / "alice"):  # results as private as uploads
        assert file_modes(folder) == {("folder", 0o700), ("file", 0o600)}, folder
    worker_pid = next(iter(svc.workers.values())).pid
    lost_before = lost_redis(svc, next(iter(svc.workers)))

    redis_server.kill()
    down = [
        alice.get("/v1/jobs"),
        alice.get(f"/v1/jobs/{job_id}"),
        alice.post("/v1/jobs", json={"mosaic_id": mosaic, **TINY, "step": 50}),
        alice.delete(f"/v1/jobs/{job_id}"),
        alice.get(f"/v1/jobs/{job_id}/files/summary.json"),
    ]
    for response in down:
        assert response.status_code == 503, (response.request.url, response.text)
        assert response.json()["code"] == "queue_unavailable" and int(response.headers["retry-after"]) > 0
    assert alice.get("/healthz").json() == {"status": "ok"}  # the process answers
    ready = alice.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "ready": False,
        "redis": False,
        "workers": 0,
        "disk": True,
        "reasons": ["Redis is unreachable"],
    }
    assert alice.get("/v1/mosaics").status_code == 200  # what needs no queue goes on
    ((name, worker),) = svc.workers.items()
    wait_for(
        lambda: lost_redis(svc, name) > lost_before, timeout=120, what="the worker to notice Redis is gone"
    )
    assert worker.poll() is None, f"the worker exited; see {svc.logs}/{name}.log"  # it waits

    redis_server.start()  # back, empty (this Redis keeps nothing)
    started = time.monotonic()
    wait_for(
        lambda: alice.get("/readyz").json()["workers"] == 1, timeout=90, what="the worker to register again"
    )
    print(f"worker live again {time.monotonic() - started:.1f} s after Redis came back")
    assert next(iter(svc.workers.values())).pid == worker_pid  # the same process: no model reload
    again = alice.post("/v1/jobs", json={"mosaic_id": mosaic, **TINY, "step": 60})
    assert again.status_code == 202, again.text
    assert wait_status(alice, again.json()["id"], "finished", "failed")["status"] == "finished"


def test_a_worker_that_loses_redis_mid_job_waits_for_it(
    svc: Service, redis_server: RedisServer, alice: httpx.Client, real_tile: Path
) -> None:
    mosaic = upload_id(alice, real_tile)
    job_id = alice.post("/v1/jobs", json={"mosaic_id": mosaic, **TINY, "step": 6}).json()["id"]
    wait_for(
        lambda: (job(alice, job_id)["windows_done"] or 0) > 0, timeout=120, what="the job to compute windows"
    )
    ((name, worker),) = svc.workers.items()
    lost_before = lost_redis(svc, name)
    redis_server.kill()
    # The job's next progress report fails, and so does recording its failure; the worker then waits.
    wait_for(
        lambda: lost_redis(svc, name) > lost_before, timeout=120, what="the worker to notice Redis is gone"
    )
    assert worker.poll() is None, f"the worker exited; see {svc.logs}/{name}.log"
    redis_server.start()
    wait_for(
        lambda: alice.get("/readyz").json()["workers"] == 1, timeout=90, what="the worker to register again"
    )
    assert worker.poll() is None
    worker_log = (svc.logs / f"{name}.log").read_text()
    # Either the job ran into the outage and the work loop waited for Redis, or the job went on without it
    # and the worker's next heartbeat found its registration gone: both register again.
    assert "Redis is back" in worker_log or "worker registration lost" in worker_log


def file_modes(folder: Path) -> set[tuple[str, int]]:
    """The permission bits of ``folder`` and of everything under it, by kind."""
    entries = [folder, *folder.rglob("*")]
    return {("folder" if p.is_dir() else "file", p.stat().st_mode & 0o777) for p in entries}


def lost_redis(svc: Service, name: str) -> int:
    """How many times the worker ``name`` has logged that it cannot reach Redis (our loop's line, or any
    refused connection: RQ's while it waits for a job, a job's own while it runs)."""
    text = (svc.logs / f"{name}.log").read_text()
    return text.count("lost Redis; waiting for it") + text.count("Connection refused")


def test_identical_concurrent_submissions_make_one_job(alice: httpx.Client, tmp_path: Path) -> None:
    mosaic = upload_id(alice, texture_png(tmp_path / "b.png", 256, seed=3))
    body = {"mosaic_id": mosaic, **TINY, "step": 33}
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda _: alice.post("/v1/jobs", json=body), range(10)))
    assert {r.status_code for r in responses} <= {200, 202}, [r.text for r in responses]
    ids = {r.json()["id"] for r in responses}
    print(f"10 identical concurrent submissions gave {len(ids)} job(s)")
    assert len(ids) == 1
    assert sum(not r.json()["reused"] for r in responses) == 1


def test_a_killed_workers_job_is_queued_again_within_seconds(
    svc: Service, alice: httpx.Client, real_tile: Path
) -> None:
    mosaic = upload_id(alice, real_tile)
    job_id = alice.post("/v1/jobs", json={"mosaic_id": mosaic, **TINY, "step": 7}).json()["id"]
    wait_for(
        lambda: (job(alice, job_id)["windows_done"] or 0) > 0, timeout=120, what="the job to compute windows"
    )
    svc.kill_worker(next(iter(svc.workers)))
    killed = time.monotonic()
    requeued = wait_for(
        lambda: (body := job(alice, job_id))["status"] == "queued" and body,
        timeout=60,
        what="the job to be queued again",
    )
    back_s = time.monotonic() - killed
    heartbeat_s = int(svc.env["RCMSEG_JOB_HEARTBEAT_S"])
    # Measured, not asserted (a loaded machine can stretch it); the bound is the wait above, not the hour of
    # the job timeout a dead worker's job once waited for.
    print(f"killed worker's job queued again after {back_s:.1f} s (heartbeat {heartbeat_s} s)")
    assert requeued["attempts"] == 1
    # The dead worker's registration is not counted as live (it would linger in Redis for 80 s).
    wait_for(lambda: alice.get("/readyz").json()["workers"] == 0, timeout=30, what="no live worker")
    svc.start_worker("w2")
    body = wait_for(
        lambda: (b := job(alice, job_id))["attempts"] == 2 and b, timeout=120, what="the retry to start"
    )
    assert alice.delete(f"/v1/jobs/{job_id}").status_code == 202  # no need to finish it
    assert body["status"] in ("running", "queued")
    ended = wait_status(alice, job_id, "canceled", "finished", "failed")
    assert ended["finished_at"] is not None


def test_a_mosaic_deleted_under_a_queued_job_fails_as_mosaic_gone(
    svc: Service, alice: httpx.Client, tmp_path: Path
) -> None:
    for name in list(svc.workers):
        svc.kill_worker(name)  # nothing takes the job until the mosaic is gone
    mosaic = upload_id(alice, texture_png(tmp_path / "c.png", 256, seed=5))
    job_id = alice.post("/v1/jobs", json={"mosaic_id": mosaic, **TINY, "step": 60}).json()["id"]
    assert alice.delete(f"/v1/mosaics/{mosaic}").status_code == 204
    svc.start_worker("w3")
    failed = wait_status(alice, job_id, "failed", "finished")
    assert failed["error"]["code"] == "mosaic_gone", failed
    assert failed["finished_at"] is not None
    worker_log = next(svc.logs.glob("w3-*.log")).read_text()
    line = next(li for li in worker_log.splitlines() if "mosaic_gone" in li)
    assert '"level": "warning"' in line
    assert "Traceback" not in worker_log


@pytest.mark.parametrize("heartbeat_s", [2, 5, 30, 120])
def test_an_idle_worker_heartbeats_twice_per_heartbeat_period(redis_url: str, heartbeat_s: int) -> None:
    """RQ's own idle wait between two heartbeats, for the ``worker_ttl`` a worker runs with."""
    worker = SimpleWorker(["any"], connection=Redis.from_url(redis_url), worker_ttl=worker_ttl_s(heartbeat_s))
    assert worker.dequeue_timeout <= heartbeat_s / 2
    assert worker_silence_s(heartbeat_s) <= heartbeat_s


def test_readiness_drops_a_worker_silent_for_one_heartbeat_period(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RCMSEG_API_TOKENS", raising=False)
    heartbeat_s = 5
    settings = load_settings(
        Settings,
        REDIS_URL=redis_url,
        api_tokens=",".join(f"{o}:{t}" for o, t in TOKENS.items()),
        data_dir=tmp_path / "data",
        queue=f"test-ready-{uuid.uuid4().hex[:8]}",
        job_heartbeat_s=heartbeat_s,
        min_free_bytes=0,
    )
    redis = Redis.from_url(redis_url)
    worker = SimpleWorker([settings.queue], connection=redis, name=f"silent-{uuid.uuid4().hex[:8]}")
    worker.register_birth()

    def last_beat(seconds_ago: float) -> None:
        redis.hset(
            worker.key, "last_heartbeat", utcformat(datetime.now(UTC) - timedelta(seconds=seconds_ago))
        )

    with TestClient(create_app(settings)) as client:
        last_beat(heartbeat_s - 2)
        live = client.get("/readyz")
        assert live.status_code == 200 and live.json()["workers"] == 1
        last_beat(heartbeat_s + 1)  # a killed worker: its registration would live on for its ttl
        dead = client.get("/readyz")
        assert dead.status_code == 503 and dead.json()["workers"] == 0
        assert dead.json()["reasons"] == ["no live worker"]
    assert not redis.exists(worker.key)  # the dead registration was removed


@pytest.mark.parametrize("rewritten", ["heartbeat", "whole"])
def test_a_worker_registers_again_when_a_jobs_heartbeat_rewrote_its_key(
    redis_url: str, rewritten: str
) -> None:
    """Redis came back empty while a job ran: the job's heartbeat wrote the worker's key again (its
    heartbeat alone, or the whole hash as rq's maintain_heartbeats does when it finds the key gone), but
    not the set of workers; the worker's next own heartbeat registers it again."""
    redis = Redis.from_url(redis_url)
    queue = Queue(f"test-rereg-{uuid.uuid4().hex[:8]}", connection=redis)
    worker = MosaicWorker([queue], connection=redis, heartbeat_s=5, name=f"rereg-{uuid.uuid4().hex[:8]}")
    worker.register_birth()
    assert [w.name for w in Worker.all(queue=queue)] == [worker.name]
    with redis.pipeline() as pipe:  # what an empty Redis looks like to it
        worker_registration.unregister(worker, pipeline=pipe)
        pipe.delete(worker.key)
        pipe.execute()
    with redis.pipeline() as pipe:  # a job's heartbeat, as rq's maintain_heartbeats sends it
        worker.heartbeat(65, pipeline=pipe)
        if rewritten == "whole":
            pipe.hset(worker.key, mapping=worker.serialize())
        pipe.execute()
    assert redis.exists(worker.key) and Worker.all(queue=queue) == []
    worker.heartbeat()
    assert [w.name for w in Worker.all(queue=queue)] == [worker.name]
    worker.register_death()
