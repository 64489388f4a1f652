"""The private parts of rq and timm that the code reaches inside, so an upgrade that moves them fails here.

``worker/queue/worker_process.py`` extends heartbeats from inside a running job with rq's worker internals:
``self.execution``, ``get_current_job()``, ``maintain_heartbeats(job, execution)`` and the
``get_heartbeat_ttl(job, working_time)`` hook it overrides. ``models/cam/dense.py`` hooks into timm's
private ``SqueezeExcite`` (``timm.models._efficientnet_blocks``; ``timm.layers.SqueezeExcite`` is another
class): its forward must still call the ``conv_reduce`` module on the pooled input. pyproject.toml bounds
both packages below their next major version; this module is what tells whether a new one still fits.
"""

from __future__ import annotations

import inspect
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from redis import Redis
from rq import Queue, SimpleWorker, get_current_job
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer
from rq.utils import utcparse
from rq.worker import BaseWorker
from timm.models._efficientnet_blocks import SqueezeExcite

from models.cam.dense import windowed_squeeze_excite
from models.network import create_network
from worker.queue.worker_process import MosaicWorker

HEARTBEAT_S = 30
JOB_TIMEOUT_S = 600
"""Long enough that rq's own TTL (timeout + 60 s) cannot be mistaken for the worker's heartbeat period."""
PAUSE_S = 1.5

WORKERS: dict[str, MosaicWorker] = {}
"""The worker serving each test queue, for the job below (it runs in this process: no fork)."""


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_maintain_heartbeats_takes_the_job_and_its_execution() -> None:
    assert "maintain_heartbeats" in vars(BaseWorker)
    assert parameters(BaseWorker.maintain_heartbeats) == ["self", "job", "execution"]


def test_get_heartbeat_ttl_is_the_hook_the_runner_overrides() -> None:
    rq_hook = parameters(BaseWorker.get_heartbeat_ttl)
    assert rq_hook == ["self", "job", "working_time"]
    assert parameters(MosaicWorker.get_heartbeat_ttl) == rq_hook
    assert "get_heartbeat_ttl" in vars(SimpleWorker)  # what MosaicWorker replaces: timeout + 60 s


def test_an_idle_simple_worker_has_an_execution_attribute_and_no_current_job(redis_url: str) -> None:
    assert isinstance(inspect.getattr_static(BaseWorker, "execution"), property)
    worker = SimpleWorker(
        [Queue(f"test-idle-{uuid.uuid4().hex[:8]}", connection=Redis.from_url(redis_url))],
        connection=Redis.from_url(redis_url),
    )
    assert worker.execution is None
    assert worker.get_current_job() is None
    assert worker.job_monitoring_interval > 0


def keep_alive_after_a_pause(pause_s: float) -> dict[str, Any]:
    """The queued job: wait, then call the worker's ``keep_alive``; report the heartbeat state around it."""
    job = get_current_job()
    assert job is not None
    worker = WORKERS[job.origin]
    execution = worker.execution
    assert execution is not None
    redis = worker.connection
    registry = job.started_job_registry.key

    def state() -> dict[str, Any]:
        beat = redis.hget(job.key, "last_heartbeat")
        assert isinstance(beat, bytes)
        return {
            "registry_expiry": redis.zscore(registry, execution.composite_key),
            "execution_ttl_ms": redis.pttl(execution.key),
            "worker_ttl_s": redis.ttl(worker.key),
            "job_heartbeat": beat.decode(),
            "at": time.time(),
        }

    time.sleep(pause_s)
    before = state()
    called = time.time()
    worker.keep_alive()
    after = state()
    return {
        "called": called,
        "execution_job_id": execution.job_id,
        "current_job_id": worker.get_current_job_id(),
        "before": before,
        "after": after,
    }


@pytest.fixture
def queue(redis_url: str) -> Iterator[Queue]:
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield Queue(
        f"test-rq-{uuid.uuid4().hex[:8]}", connection=Redis.from_url(redis_url), serializer=JSONSerializer
    )
    for sig, handler in handlers.items():  # the worker installs its own
        signal.signal(sig, handler)


def test_keep_alive_extends_the_running_jobs_heartbeats_by_the_workers_period(queue: Queue) -> None:
    job = queue.enqueue_call(
        func=f"{__name__}.keep_alive_after_a_pause", kwargs={"pause_s": PAUSE_S}, timeout=JOB_TIMEOUT_S
    )
    worker = MosaicWorker(
        [queue], connection=queue.connection, serializer=JSONSerializer, heartbeat_s=HEARTBEAT_S
    )
    WORKERS[queue.name] = worker
    try:
        assert worker.work(burst=True, with_scheduler=False)
    finally:
        del WORKERS[queue.name]
    job = Job.fetch(job.id, connection=queue.connection, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FINISHED, job.latest_result().exc_string  # type: ignore[union-attr]
    seen = job.return_value()
    assert isinstance(seen, dict)
    assert seen["execution_job_id"] == seen["current_job_id"] == job.id
    before, after = seen["before"], seen["after"]

    # The started-job registry's expiry moved to now + heartbeat_s: a job whose worker dies is found
    # abandoned that long after its last report (SimpleWorker alone would wait timeout + 60 s).
    # Bounds by the times measured around the call, not by how fast it ran (the machine may be loaded).
    called, read = seen["called"], after["at"]
    assert after["registry_expiry"] > before["registry_expiry"]
    assert called + HEARTBEAT_S - 1 <= after["registry_expiry"] <= read + HEARTBEAT_S + 1
    # The execution's key lives heartbeat_s again from the call; before it, the pause had used some up.
    assert before["execution_ttl_ms"] < (HEARTBEAT_S - PAUSE_S + 0.5) * 1000
    assert after["execution_ttl_ms"] >= (HEARTBEAT_S - (read - called)) * 1000 - 100
    # The worker's own key: rq gives it job_monitoring_interval (= heartbeat_s) + 60 s.
    assert after["worker_ttl_s"] > HEARTBEAT_S + 60 - 2
    assert before["worker_ttl_s"] <= HEARTBEAT_S
    job_beat = (utcparse(after["job_heartbeat"]) - utcparse(before["job_heartbeat"])).total_seconds()
    assert job_beat >= PAUSE_S - 0.1


@pytest.mark.parametrize("arch", ["test_efficientnet", "efficientnet_b2"])
def test_timm_efficientnets_are_built_of_the_squeeze_excite_dense_mode_replaces(arch: str) -> None:
    blocks = [m for m in create_network(arch, in_chans=1).modules() if isinstance(m, SqueezeExcite)]
    assert blocks, (
        f"{arch} has no timm.models._efficientnet_blocks.SqueezeExcite: dense mode would do nothing"
    )
    for se in blocks:
        assert isinstance(se.conv_reduce, torch.nn.Conv2d) and isinstance(se.conv_expand, torch.nn.Conv2d)
        assert callable(se.act1) and callable(se.gate)
        assert parameters(se.forward) == ["x"] and "forward" not in vars(se)


def test_squeeze_excite_is_still_the_global_mean_formula_dense_mode_rewrites() -> None:
    torch.manual_seed(0)
    [se, *_] = [
        m for m in create_network("test_efficientnet", in_chans=1).modules() if isinstance(m, SqueezeExcite)
    ]
    x = torch.randn(2, se.conv_reduce.in_channels, 6, 5)
    with torch.inference_mode():
        expected = x * se.gate(se.conv_expand(se.act1(se.conv_reduce(x.mean((2, 3), keepdim=True)))))
        torch.testing.assert_close(se(x), expected)


def test_windowed_squeeze_excite_takes_effect_and_a_window_covering_the_input_changes_nothing() -> None:
    torch.manual_seed(0)
    net: Any = create_network("test_efficientnet", in_chans=1).eval()
    x = torch.randn(1, 1, 128, 128)
    with torch.inference_mode():
        plain = net.forward_features(x)
        with windowed_squeeze_excite(net, window=128):
            covering = net.forward_features(x)
        with windowed_squeeze_excite(net, window=32):
            local = net.forward_features(x)
        after = net.forward_features(x)
    torch.testing.assert_close(covering, plain, rtol=1e-6, atol=1e-9)
    # The hooks reached timm's blocks: the pooling became local (random weights: small, but far from 0).
    assert (local - plain).abs().max() > 1e-3 * plain.abs().max()
    torch.testing.assert_close(after, plain, rtol=0, atol=0)  # and left them as they were
    assert all("forward" not in vars(m) for m in net.modules() if isinstance(m, SqueezeExcite))
