"""A job that runs far longer than the heartbeat period, without a single progress report, is never
taken for dead while its worker lives: the worker heartbeats for it from a thread of its own. Real Redis,
the real worker class, in this process."""

from __future__ import annotations

import threading
import time
import uuid

from redis import Redis
from rq import Queue
from rq.job import JobStatus
from rq.results import Result
from rq.serializers import JSONSerializer

from worker.queue.worker_process import MosaicWorker

HEARTBEAT_S = 4
"""Beats come every second: only a stall of three seconds on a loaded machine could miss one period."""
SILENT_S = 3 * HEARTBEAT_S


def test_a_silent_long_job_is_not_taken_for_dead(redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    queue = Queue(f"heartbeat-{uuid.uuid4().hex[:8]}", connection=redis, serializer=JSONSerializer)
    job = queue.enqueue_call(func="time.sleep", args=(SILENT_S,), timeout=60)
    worker = MosaicWorker([queue], connection=redis, serializer=JSONSerializer, heartbeat_s=HEARTBEAT_S)
    done = threading.Event()

    def reap() -> None:  # what the API's sweep and idle workers do, much more often
        while not done.wait(0.25):
            queue.started_job_registry.cleanup()

    reaper = threading.Thread(target=reap, daemon=True)
    reaper.start()
    started = time.monotonic()
    try:
        worker.work(burst=True, with_scheduler=False)
    finally:
        done.set()
        reaper.join()
    took = time.monotonic() - started
    print(f"silent job ran {took:.1f} s with a {HEARTBEAT_S} s heartbeat")
    assert took >= SILENT_S
    assert job.get_status(refresh=True) == JobStatus.FINISHED
    # Had it been taken for dead, the cleanup would have recorded a failure (AbandonedJobError) first.
    assert [r.type for r in job.results()] == [Result.Type.SUCCESSFUL]
