"""The queue job and the worker process, in this process: a real Redis, the tiny model, a burst worker.

The network is slowed by a fixed delay per batch where a test needs a job to outlast the heartbeat, so
what is tested does not depend on how fast this machine is.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from rq import Queue, Retry
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from tests.worker.queue.conftest import HEARTBEAT_S, network_must_not_run, slow_network, work
from worker.engine.device import RunOptions
from worker.queue.job import WorkerRuntime, configure, run_segment_job
from worker.queue.worker_process import MosaicWorker


def enqueue(setup: dict[str, Any], *, step: int = 16, retries: int = 1, timeout: int = 120) -> Job:
    job_id = uuid.uuid4().hex
    kwargs = {
        "source": "uploads/m.png",
        "out_dir": f"results/{job_id}",
        "model": "tiny",
        "params": {"step": step, "pixel_size_um": 2.0},
        "cancel_key": f"test:cancel:{job_id}",
    }
    queue: Queue = setup["queue"]
    return queue.enqueue_call(
        func="worker.queue.job.run_segment_job",
        kwargs=kwargs,
        job_id=job_id,
        timeout=timeout,
        retry=Retry(max=retries),
        meta={"owner": "test"},
    )


def test_a_job_longer_than_the_heartbeat_is_kept_alive_by_its_progress(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = enqueue(setup, step=32)  # 81 windows, 6 batches
    registry = setup["queue"].started_job_registry
    expiry: dict[int, float] = {}

    def note_expiry(batch: int) -> None:
        scores = [score for _member, score in setup["redis"].zrange(registry.key, 0, -1, withscores=True)]
        expiry[batch] = max(scores)

    slow_network(monkeypatch, 1.5, hook=note_expiry)  # about 9 s in all: nearly two heartbeat periods
    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def reaper() -> None:
        """What the API and idle workers do: retry or fail every job whose heartbeat expired."""
        while not stop.is_set():
            registry.cleanup()
            seen.append(Job.fetch(job.id, connection=setup["redis"], serializer=JSONSerializer).get_meta())
            time.sleep(0.1)

    thread = threading.Thread(target=reaper)
    thread.start()
    try:
        work(setup)
    finally:
        stop.set()
        thread.join()

    # Each progress report pushed the job's expiry forward: by the last batch it had moved by more than a
    # whole heartbeat period, so without the reports the job would have been declared abandoned.
    assert expiry[6] - expiry[1] > HEARTBEAT_S
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED
    assert job.meta["attempts"] == 1 and job.retries_left == 1  # never found abandoned, never retried
    assert job.meta["progress"] == 1.0 and job.meta["stage"] == "finished"
    total = job.meta["windows_total"]
    assert job.meta["windows_done"] == total == 81
    done = [m["windows_done"] for m in seen if m.get("stage") == "windows"]
    assert done == sorted(done) and 0 < done[0] < total  # progress was visible while it ran
    assert all(0.0 <= m.get("progress", 0.0) <= 1.0 for m in seen)
    out = setup["data"] / "results" / job.id
    assert (out / "summary.json").is_file() and (out / "heat.dzi").is_file()
    assert job.return_value() == {"out_dir": f"results/{job.id}"}


def test_cancel_flag_stops_the_job_between_batches_without_retry(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = enqueue(setup, retries=2)
    cancel_key = f"test:cancel:{job.id}"
    slow_network(monkeypatch, 0.05, hook=lambda n: setup["redis"].set(cancel_key, 1) if n == 3 else None)
    work(setup)

    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    assert job.meta["error"]["code"] == "canceled"
    assert job.meta["attempts"] == 1  # a canceled job is not retried
    assert 0 < job.meta["windows_done"] < job.meta["windows_total"]
    results = setup["data"] / "results"
    assert not results.exists() or list(results.iterdir()) == []  # no result, no half-written folder


def test_a_job_canceled_before_it_starts_computes_nothing(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = enqueue(setup)
    setup["redis"].set(f"test:cancel:{job.id}", 1)
    slow_network(monkeypatch, 0.0, hook=network_must_not_run)
    work(setup)
    job.refresh()
    assert job.get_status() == JobStatus.FAILED and job.meta["error"]["code"] == "canceled"


def test_a_job_past_its_timeout_fails_without_retry(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = enqueue(setup, timeout=2, retries=2)
    slow_network(monkeypatch, 0.5)  # 16 batches: 8 s
    work(setup)
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    assert job.meta["error"]["code"] == "job_timeout" and job.meta["attempts"] == 1
    assert not (setup["data"] / "results" / job.id).exists()


def test_unreadable_mosaic_fails_with_its_reason_and_no_retry(setup: dict[str, Any]) -> None:
    (setup["data"] / "uploads" / "m.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    job = enqueue(setup, retries=3)
    work(setup)
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    error = job.meta["error"]
    assert error["code"] == "unreadable_mosaic" and error["message"].startswith("m.png:")
    assert str(setup["data"]) not in error["message"]  # no worker paths in what the client sees
    assert job.meta["attempts"] == 1


def test_an_existing_result_is_returned_without_computing(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An identical request whose job record had expired while its result folder was kept.
    job = enqueue(setup)
    out = setup["data"] / "results" / job.id
    out.mkdir(parents=True)
    (out / "summary.json").write_text("{}")
    slow_network(monkeypatch, 0.0, hook=network_must_not_run)
    work(setup)
    assert job.get_status() == JobStatus.FINISHED


def test_worker_heartbeat_period_replaces_the_job_timeout(setup: dict[str, Any]) -> None:
    worker = MosaicWorker(
        [setup["queue"]], connection=setup["redis"], serializer=JSONSerializer, heartbeat_s=7
    )
    job = enqueue(setup)
    assert worker.get_heartbeat_ttl(job) == 7  # SimpleWorker would use the job timeout (120 s) + 60
    assert worker.worker_ttl >= 7


def test_the_job_needs_a_worker_runtime(setup: dict[str, Any]) -> None:
    configure(None)
    with pytest.raises(RuntimeError, match="rcmseg worker"):
        run_segment_job(source="x", out_dir="y", model="tiny", params={}, cancel_key="k")
    runtime = WorkerRuntime(data_dir=setup["data"], zoo=setup["zoo"], device="cpu", options=RunOptions())
    for name in ("../tiny", ".hidden", "nosuch"):
        with pytest.raises(ValueError, match="not a model of the zoo"):
            runtime.model(name)
