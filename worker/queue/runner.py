"""The worker process: load the models once, then run queue jobs one after another in this process.

Why not RQ's default forking worker: a child forked after CUDA was initialised cannot use CUDA, and forking
per job would reload the models every time. ``MosaicWorker`` is RQ's ``SimpleWorker`` (no fork) with one
change: while a job runs, nothing heartbeats for it unless the job does, so the job's progress reports
call ``keep_alive`` (worker, execution and job heartbeats). If the process dies mid-job (SIGKILL, out of
memory, GPU fault), the heartbeats stop, the job's execution expires after ``heartbeat_s`` and RQ's
started-job cleanup (run by the API and by idle workers) retries it on another worker, or fails it as
abandoned when no retry is left. It is never left "running".
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from redis import Redis
from rq import SimpleWorker
from rq.job import Job
from rq.serializers import JSONSerializer

from worker.engine.params import RunOptions
from worker.io.zoo import list_models, resolve_model
from worker.queue.job import WorkerRuntime, configure

if TYPE_CHECKING:
    from worker.io.checkpoint import LoadedModel

log = logging.getLogger(__name__)

MIN_WORKER_TTL_S = 20


class MosaicWorker(SimpleWorker):
    """A non-forking RQ worker whose running job proves it is alive through its progress reports."""

    def __init__(self, *args: object, heartbeat_s: int, **kwargs: object) -> None:
        kwargs.setdefault("worker_ttl", max(MIN_WORKER_TTL_S, heartbeat_s))
        kwargs["job_monitoring_interval"] = heartbeat_s
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.heartbeat_s = heartbeat_s

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """A running job is abandoned when no heartbeat came for ``heartbeat_s`` (SimpleWorker would wait
        for the whole job timeout, so a killed worker's job would read "running" for an hour)."""
        return self.heartbeat_s

    def keep_alive(self) -> None:
        """Extend the heartbeats of this worker and of the job it is running."""
        execution = self.execution
        job = self.get_current_job()
        if execution is not None and job is not None:
            self.maintain_heartbeats(job, execution)


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """Everything a worker process needs, given by the command line (which reads the settings)."""

    redis_url: str
    queue: str
    data_dir: Path
    zoo: Path
    models: tuple[str, ...] = ()
    device: str = "auto"
    options: RunOptions = field(default_factory=RunOptions)
    heartbeat_s: int = 180
    name: str | None = None
    threads: int | None = None


def load_models(zoo: Path, names: tuple[str, ...], device: str) -> tuple[str, dict[Path, LoadedModel]]:
    """The named zoo models (all of the zoo when none are named), loaded on ``device``; and the device."""

    from worker.engine.device import resolve_device
    from worker.io.checkpoint import load_model

    dev = resolve_device(device)
    folders = [resolve_model(n, zoo) for n in names] if names else [zoo / n for n in list_models(zoo)]
    if not folders:
        log.warning("no model found in %s; jobs will fail until one is added", zoo)
    models: dict[Path, LoadedModel] = {}
    for folder in folders:
        loaded = load_model(folder, dev)
        models[folder.resolve()] = loaded
        log.info("loaded model %s (%s) on %s", folder.name, loaded.card.arch, dev)
    return str(dev), models


def run_worker(config: WorkerConfig, *, burst: bool = False) -> bool:
    """Take jobs until stopped (SIGTERM/SIGINT finish the current job first) or, with ``burst``, until the
    queue is empty. Returns whether any job ran."""
    from worker.engine.device import prepare_process, resolve_device

    prepare_process(resolve_device(config.device), threads=config.threads)
    device, models = load_models(config.zoo, config.models, config.device)
    name = config.name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    worker = MosaicWorker(
        [config.queue],
        name=name,
        connection=Redis.from_url(config.redis_url),
        serializer=JSONSerializer,
        heartbeat_s=config.heartbeat_s,
    )
    configure(
        WorkerRuntime(
            data_dir=config.data_dir.resolve(),
            zoo=config.zoo,
            device=device,
            options=config.options,
            models=models,
            keep_alive=worker.keep_alive,
            # Several reports per heartbeat period, so one slow batch cannot make the job look abandoned.
            report_interval_s=min(1.0, config.heartbeat_s / 4),
        )
    )
    try:
        return worker.work(burst=burst, with_scheduler=False)
    finally:
        configure(None)
