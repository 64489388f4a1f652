"""The worker process: load the models once, then run queue jobs one after another in this process.

Why not RQ's default forking worker: a child forked after CUDA was initialised cannot use CUDA, and forking
per job would reload the models every time. ``MosaicWorker`` is RQ's ``SimpleWorker`` (no fork) with these
changes:

- While a job runs, nothing heartbeats for it unless someone does: a thread of the worker calls
  ``keep_alive`` (worker, execution and job heartbeats) several times per ``heartbeat_s``, and so do the
  job's progress reports. A long job is never taken for dead while its process lives, whatever stage the
  engine is in (its timeout bounds a job that hangs). If the process dies mid-job (SIGKILL, out of memory,
  GPU fault), the heartbeats stop, the job's execution expires after ``heartbeat_s`` and RQ's started-job
  cleanup (run by the API every sweep and by idle workers) retries it on another worker, or fails it as
  abandoned when no retry is left. It is never left "running".
- A job that fails for a known reason (an ``RcmSegError``: unreadable mosaic, invalid parameter, cancel)
  is logged at WARNING with its code, without a traceback; only unexpected errors get one.
- When Redis goes away, or answers but refuses writes (out of memory, read-only, a full disk),
  ``run_worker`` waits for it with backoff and starts working again in the same process, models still
  loaded, instead of exiting. A job's progress writes that Redis refuses are logged and the job goes on.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from redis import Redis
from redis.exceptions import RedisError
from rq import SimpleWorker, worker_registration
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.timeouts import JobTimeoutException

from models.errors import RcmSegError
from worker.contract import worker_ttl_s
from worker.engine.device import RunOptions
from worker.errors import JobCanceled
from worker.io.zoo import list_models, resolve_model
from worker.queue.job import WorkerRuntime, configure

if TYPE_CHECKING:
    from worker.io.checkpoint import LoadedModel

log = logging.getLogger(__name__)

RECONNECT_MAX_WAIT_S = 30.0
"""Longest wait between two attempts to reach Redis again."""
RESTART_PAUSE_S = 2.0
"""Pause before the work loop starts again after it stopped on an unexpected error."""


class MosaicWorker(SimpleWorker):
    """A non-forking RQ worker that heartbeats for its running job from a thread of its own."""

    def __init__(self, *args: object, heartbeat_s: int, **kwargs: object) -> None:
        kwargs.setdefault("worker_ttl", worker_ttl_s(heartbeat_s))
        kwargs["job_monitoring_interval"] = heartbeat_s
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.heartbeat_s = heartbeat_s
        self.stop_asked = False

    warmup_s: float = 0.0
    """Seconds the worker spent running every input shape once before registering (``warm`` in its
    registration: a worker registers only when warm, so ``/readyz`` counts it only then)."""

    def register_birth(self, *args: object, **kwargs: object) -> None:
        super().register_birth(*args, **kwargs)  # type: ignore[arg-type]
        self.connection.hset(self.key, mapping={"warm": 1, "warmup_s": round(self.warmup_s, 2)})

    def request_stop(self, signum: int, frame: object) -> None:
        """SIGTERM/SIGINT: finish the current job, then stop (and do not reconnect)."""
        self.stop_asked = True
        super().request_stop(signum, frame)  # type: ignore[arg-type]

    def heartbeat(self, timeout: int | None = None, pipeline: object = None) -> None:
        """RQ's heartbeat; and if this worker's registration is gone (a Redis that came back without
        its data), register again, so that the API counts this worker as live. A job's heartbeat may
        have written the worker's key again meanwhile (rq's ``maintain_heartbeats`` does when it finds
        it gone), but not the set of workers the API reads: membership of that set is the registration."""
        if pipeline is None and not self.connection.sismember(self.redis_workers_keys, self.key):
            log.warning("worker registration lost (Redis restarted?); registering again")
            self.connection.delete(self.key)
            self.register_birth()
        super().heartbeat(timeout, pipeline)  # type: ignore[arg-type]

    def execute_job(self, job: Job, queue: Queue) -> None:
        stop = threading.Event()
        beat = threading.Thread(target=self._beat_until, args=(stop,), name="job-heartbeat", daemon=True)
        beat.start()
        try:
            super().execute_job(job, queue)
        finally:
            stop.set()
            beat.join()

    def _beat_until(self, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_s / 4):
            try:
                self.keep_alive()
            except RedisError as exc:
                log.warning("job heartbeat failed (Redis unreachable?): %s", exc)

    def handle_exception(self, job: Job, *exc_info: object) -> None:
        """Known failures in one line at WARNING (INFO for a cancel); others as RQ logs them."""
        exc = exc_info[1] if len(exc_info) > 1 else None
        if isinstance(exc, JobCanceled):
            log.info("job %s canceled", job.id, extra={"job_id": job.id})
        elif isinstance(exc, RcmSegError | JobTimeoutException):
            code = getattr(exc, "code", "job_timeout")
            log.warning("job %s failed: %s", job.id, exc, extra={"job_id": job.id, "code": code})
        else:
            super().handle_exception(job, *exc_info)

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
    compile: str = "auto"
    """``on``, ``off``, or ``auto`` (on for CUDA): ``torch.compile`` the CAM pass at start."""


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


def compile_models(models: dict[Path, LoadedModel], config: WorkerConfig) -> dict[Path, LoadedModel]:
    """Each model with its CAM pass compiled and warmed up at the worker's batch size and the device's
    default precision, when ``config.compile`` asks for it (``auto``: on CUDA only)."""
    from worker.engine.device import default_batch_size, default_precision, resolve_device
    from worker.engine.predictor import compile_cam

    dev = resolve_device(config.device)
    if config.compile == "off" or (config.compile == "auto" and dev.type != "cuda"):
        return models
    out = {}
    for folder, model in models.items():
        batch = config.options.batch_size or default_batch_size(dev, model.card.window)
        out[folder] = compile_cam(model, batch_size=batch, precision=default_precision(dev))
    return out


def run_worker(config: WorkerConfig, *, burst: bool = False) -> bool:
    """Take jobs until stopped (SIGTERM/SIGINT finish the current job first) or, with ``burst``, until the
    queue is empty. Returns whether any job ran."""
    from worker.engine.device import prepare_process, resolve_device

    prepare_process(resolve_device(config.device), threads=config.threads)  # cuDNN autotuning on CUDA
    device, models = load_models(config.zoo, config.models, config.device)
    models = compile_models(models, config)
    from worker.engine.predictor import warm_worker

    warmup_s = warm_worker(list(models.values()), batch_size=config.options.batch_size)  # before registering
    name = config.name or f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:6]}"
    connection = Redis.from_url(config.redis_url, socket_connect_timeout=5, health_check_interval=30)
    worked = False
    try:
        while True:
            worker = MosaicWorker(
                [config.queue],
                name=name,
                connection=connection,
                serializer=JSONSerializer,
                heartbeat_s=config.heartbeat_s,
            )
            worker.warmup_s = warmup_s
            configure(
                WorkerRuntime(
                    data_dir=config.data_dir.resolve(),
                    zoo=config.zoo,
                    device=device,
                    options=config.options,
                    models=models,
                    keep_alive=worker.keep_alive,
                    # Several reports per heartbeat period: one slow batch cannot make the job look lost.
                    report_interval_s=min(1.0, config.heartbeat_s / 4),
                )
            )
            try:
                worked = worker.work(burst=burst, with_scheduler=False) or worked
            except RedisError as exc:  # RQ's teardown talks to Redis too
                log.debug("the work loop ended on a Redis error: %s", exc)
            if burst or worker.stop_asked:
                return worked
            stopping = partial(getattr, worker, "stop_asked")
            if _redis_answers(connection):
                log.warning("the work loop stopped (see above); starting it again", extra={"worker": name})
                time.sleep(RESTART_PAUSE_S)
            else:
                log.warning("lost Redis; waiting for it (models stay loaded)", extra={"worker": name})
                if not _wait_until(partial(_redis_answers, connection), stopping=stopping):
                    return worked
                log.info("Redis is back; taking jobs again", extra={"worker": name})
            if not _forget_registration(worker):
                # Redis answers but refuses writes (out of memory, read-only, a full disk): registering
                # again would fail, so wait until it accepts them.
                log.warning("Redis refuses writes; waiting until it accepts them (models stay loaded)")
                if not _wait_until(partial(_forget_registration, worker), stopping=stopping):
                    return worked
                log.info("Redis accepts writes again; taking jobs again", extra={"worker": name})
    finally:
        configure(None)


def _redis_answers(connection: Redis) -> bool:
    try:
        return bool(connection.ping())
    except RedisError:
        return False


def _wait_until(ready: Callable[[], bool], *, stopping: Callable[[], bool]) -> bool:
    """Block until ``ready()`` (``True``) or a stop is asked (``False``), trying again after 0.5, 1,
    2 ... up to ``RECONNECT_MAX_WAIT_S`` s."""
    wait = 0.5
    while not ready():
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if stopping():
                return False
            time.sleep(0.1)
        wait = min(wait * 2, RECONNECT_MAX_WAIT_S)
    return True


def _forget_registration(worker: MosaicWorker) -> bool:
    """Remove this worker's registration left from before the work loop stopped, so that it can register
    again under its name (RQ refuses a name whose registration looks alive); whether Redis took it."""
    try:
        with worker.connection.pipeline() as pipe:
            worker_registration.unregister(worker, pipeline=pipe)
            pipe.delete(worker.key)
            pipe.execute()
    except RedisError as exc:
        log.debug("could not remove the old worker registration: %s", exc)
        return False
    return True
