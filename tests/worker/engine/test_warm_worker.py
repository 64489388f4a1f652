"""A worker warms every shape before it registers, and says so in its registration (``/readyz`` counts only
registered, heartbeating workers)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from redis import Redis
from rq.serializers import JSONSerializer

from worker.engine.predictor import MODES, Predictor, warm_worker
from worker.io.checkpoint import load_model
from worker.queue.worker_process import MosaicWorker


def test_warm_worker_runs_every_mode_and_logs_its_seconds(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = load_model(tiny_model_dir)
    with caplog.at_level(logging.INFO, logger="worker.engine.predictor"):
        seconds = warm_worker([model], batch_size=4)
    assert seconds > 0 and Predictor.for_model(model, batch_size=4).warm == set(MODES)
    assert any("warmed random-test_efficientnet" in r.getMessage() for r in caplog.records)


def test_a_worker_registers_as_warm(redis_url: str) -> None:
    connection = Redis.from_url(redis_url)
    worker = MosaicWorker(
        ["warm-test"],
        name="warm-test-worker",
        connection=connection,
        serializer=JSONSerializer,
        heartbeat_s=5,
    )
    worker.warmup_s = 1.25
    worker.register_birth()
    try:
        assert connection.hget(worker.key, "warm") == b"1"
        assert float(connection.hget(worker.key, "warmup_s") or 0) == 1.25
    finally:
        worker.register_death()
