"""A worker process whose Redis refuses writes (out of memory under ``noeviction``, as a full Redis does)
keeps running: it logs the refusals, and takes and finishes jobs once Redis accepts writes again, the job
it was running included. A real ``redis-server`` of this module's own (its settings are changed), a real
``rcmseg worker`` process, the tiny model."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from redis import Redis
from rq import Queue, Worker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.app.conftest import wait_for
from tests.conftest import REPO, redis_server
from worker.contract import JOB_FUNCTION, MetaKey

pytestmark = pytest.mark.slow

TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    """A private ``redis-server`` whose memory limit the tests change."""
    with redis_server(tmp_path_factory.mktemp("refusing-redis")) as port:
        client = Redis(port=port)
        client.config_set("maxmemory-policy", "noeviction")
        yield client


@pytest.fixture(scope="module")
def worker(
    redis: Redis, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """An ``rcmseg worker`` process on that Redis, with a 300 x 300 mosaic in its data folder."""
    root = tmp_path_factory.mktemp("refusal")
    data, zoo = root / "data", root / "zoo"
    (data / "uploads").mkdir(parents=True)
    zoo.mkdir()
    (zoo / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    pixels = np.random.default_rng(0).integers(1, 255, (300, 300), dtype=np.uint8)
    Image.fromarray(pixels).save(data / "uploads" / "m.png")
    queue = f"refusal-{uuid.uuid4().hex[:8]}"
    port = redis.connection_pool.connection_kwargs["port"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMSEG_") and k != "REDIS_URL"}
    env.update(
        PYTHONUNBUFFERED="1",
        REDIS_URL=f"redis://127.0.0.1:{port}/0",
        RCMSEG_QUEUE=queue,
        RCMSEG_DATA_DIR=str(data),
        RCMSEG_MODEL_ZOO=str(zoo),
        RCMSEG_DEFAULT_MODEL="tiny",
        RCMSEG_DEVICE="cpu",
        RCMSEG_BATCH_SIZE="16",
        RCMSEG_JOB_HEARTBEAT_S="5",
        RCMSEG_JOB_RETRIES="1",
    )
    name = f"refusal-{uuid.uuid4().hex[:6]}"
    log = root / "worker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--name", name, "--threads", "1"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=out,
        )
    rq_queue = Queue(queue, connection=redis, serializer=JSONSerializer)
    try:
        wait_for(lambda: Worker.all(queue=rq_queue), timeout=TIMEOUT_S, what="the worker to register")
        yield {"proc": proc, "queue": rq_queue, "name": name, "log": log}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def enqueue(worker: dict[str, Any], *, step: int) -> Job:
    job_id = uuid.uuid4().hex
    kwargs = {
        "source": "uploads/m.png",
        "out_dir": f"results/{job_id}",
        "model": "tiny",
        "params": {"step": step, "pixel_size_um": 2.0},
        "cancel_key": f"test:cancel:{job_id}",
    }
    queue: Queue = worker["queue"]
    return queue.enqueue_call(func=JOB_FUNCTION, kwargs=kwargs, job_id=job_id, timeout=600)


def refuse_writes(redis: Redis) -> None:
    redis.config_set("maxmemory", 1)  # every write is refused: "OOM command not allowed"


def accept_writes(redis: Redis) -> None:
    redis.config_set("maxmemory", 0)


def log_mentions(worker: dict[str, Any], text: str, *, after: int) -> bool:
    return text in Path(worker["log"]).read_text(errors="replace")[after:]


def finishes_here(worker: dict[str, Any], job: Job) -> None:
    """``job`` finishes, run by this worker, whose process is still the one that started."""

    def ended() -> bool:
        return job.get_status(refresh=True) in (JobStatus.FINISHED, JobStatus.FAILED)

    wait_for(ended, timeout=TIMEOUT_S, what=f"job {job.id} to end")
    assert job.get_status() == JobStatus.FINISHED, job.meta
    assert worker["proc"].poll() is None  # the one worker of the queue, in the process that started
    assert [w.name for w in Worker.all(queue=worker["queue"])] == [worker["name"]]


def test_an_idle_worker_outlives_a_redis_that_refuses_writes(redis: Redis, worker: dict[str, Any]) -> None:
    start = len(Path(worker["log"]).read_text(errors="replace"))
    refuse_writes(redis)
    try:
        wait_for(
            lambda: log_mentions(worker, "Redis refuses writes", after=start),
            timeout=TIMEOUT_S,
            what="the worker to meet a refused write",
        )
        assert worker["proc"].poll() is None, "the worker exited"
    finally:
        accept_writes(redis)
    finishes_here(worker, enqueue(worker, step=32))


def test_a_running_job_outlives_a_redis_that_refuses_writes(redis: Redis, worker: dict[str, Any]) -> None:
    job = enqueue(worker, step=4)  # 3,600 windows: it is still running when Redis refuses writes
    wait_for(
        lambda: (job.get_meta(refresh=True).get(MetaKey.WINDOWS_DONE) or 0) > 0,
        timeout=TIMEOUT_S,
        what="the job computing",
    )
    start = len(Path(worker["log"]).read_text(errors="replace"))
    refuse_writes(redis)
    try:
        wait_for(
            lambda: log_mentions(worker, "could not write its progress", after=start),
            timeout=TIMEOUT_S,
            what="the job to meet a refused write",
        )
        assert worker["proc"].poll() is None, "the worker exited"
    finally:
        accept_writes(redis)
    finishes_here(worker, job)
    finishes_here(worker, enqueue(worker, step=32))
