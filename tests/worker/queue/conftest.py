"""What the queue tests share: a data folder with one mosaic, a zoo, a private queue, a burst worker run in
this process, and a network slowed by a fixed delay per batch where a test needs a job to outlast
something."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from redis import Redis
from rq import Queue, get_current_job
from rq.serializers import JSONSerializer

import worker.io.checkpoint as checkpoint
from worker.engine.device import RunOptions
from worker.queue.job import configure
from worker.queue.worker_process import WorkerConfig, run_worker

HEARTBEAT_S = 5


@pytest.fixture
def setup(redis_url: str, tiny_model_dir: Path, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A data folder holding one 300 x 300 mosaic, a zoo with the tiny model, a private queue."""
    data = tmp_path / "data"
    (data / "uploads").mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(1, 255, (300, 300), dtype=np.uint8)).save(data / "uploads" / "m.png")
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    redis = Redis.from_url(redis_url)
    queue = Queue(f"test-jobs-{uuid.uuid4().hex[:8]}", connection=redis, serializer=JSONSerializer)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield {"data": data, "zoo": zoo, "redis": redis, "queue": queue, "url": redis_url}
    for sig, handler in handlers.items():  # the worker installs its own
        signal.signal(sig, handler)
    configure(None)


def work(setup: dict[str, Any]) -> None:
    """Run a burst worker until the queue is empty."""
    config = WorkerConfig(
        redis_url=setup["url"],
        queue=setup["queue"].name,
        data_dir=setup["data"],
        zoo=setup["zoo"],
        models=("tiny",),
        device="cpu",
        options=RunOptions(device="cpu", batch_size=16, workdir=str(setup["data"])),
        heartbeat_s=HEARTBEAT_S,
    )
    run_worker(config, burst=True)


def slow_network(
    monkeypatch: pytest.MonkeyPatch, delay_s: float, hook: Callable[[int], None] = lambda _n: None
) -> None:
    """Models the worker loads from now on wait ``delay_s`` per batch of a job; ``hook(batch_number)`` runs
    first. The worker's warm-up before it takes a job is left alone."""
    original = checkpoint.load_model
    calls = 0

    def before_batch(_module: torch.nn.Module, _inputs: Any) -> None:
        nonlocal calls
        if get_current_job() is None:  # warming up, before any job
            return
        calls += 1
        hook(calls)
        time.sleep(delay_s)

    def load_slow_model(*args: Any, **kwargs: Any) -> checkpoint.LoadedModel:
        loaded = original(*args, **kwargs)
        stem = next(m for m in loaded.net.modules() if isinstance(m, torch.nn.Conv2d))
        stem.register_forward_pre_hook(before_batch)  # the first layer runs once per batch
        return loaded

    monkeypatch.setattr(checkpoint, "load_model", load_slow_model)


def network_must_not_run(_batch: int) -> None:
    raise AssertionError("the network ran")
