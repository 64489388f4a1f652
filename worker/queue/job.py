"""The queue job: segment one uploaded mosaic, report progress into the job's meta, heed cancellation.

The API enqueues ``worker.queue.job.run_segment_job`` by name with JSON keyword arguments (paths relative to
the data folder, a zoo model name, the engine parameters, the Redis key that asks for cancellation). The
worker process (``worker.queue.worker_process``) loads its models once and installs a ``WorkerRuntime``
here before it takes jobs; the job only looks models up.

Job meta written while it runs: ``stage``, ``windows_done``, ``windows_total``, ``progress`` (0..1 over
the stages), ``eta_s``, ``attempts``, and ``error`` ``{code, message}`` when it fails (recorded as
:mod:`worker.queue.failures` says, for every queue job alike).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack

from redis.exceptions import ResponseError
from rq import get_current_job
from rq.job import Job

from worker.contract import SUMMARY_FILE, MetaKey, SegmentJobKwargs, Stage, overall_progress
from worker.engine.device import RunOptions
from worker.io.checkpoint import LoadedModel, load_model
from worker.io.zoo import zoo_model
from worker.params import SegmentParams
from worker.progress import Progress
from worker.queue.failures import run_recorded

log = logging.getLogger(__name__)


@dataclass
class WorkerRuntime:
    """What a worker process holds for its jobs: the data folder, loaded models and a heartbeat."""

    data_dir: Path
    zoo: Path
    device: str
    options: RunOptions
    models: dict[Path, LoadedModel] = field(default_factory=dict)
    keep_alive: Callable[[], None] = lambda: None
    report_interval_s: float = 1.0
    cancel_poll_s: float = 0.2

    def model(self, name: str) -> LoadedModel:
        """A zoo model, loaded at worker start; one the worker did not preload is loaded now and kept."""
        folder = zoo_model(self.zoo, name).resolve()
        if folder not in self.models:
            log.warning("model %s was not loaded at start; loading it now", name)
            self.models[folder] = load_model(folder, self.device)
        return self.models[folder]


_RUNTIME: ContextVar[WorkerRuntime | None] = ContextVar("rcmseg_worker_runtime", default=None)
"""The runtime of the worker this code runs in, set by ``worker.queue.worker_process`` while it works."""


def configure(runtime: WorkerRuntime | None) -> None:
    """Install the worker's runtime (``worker.queue.worker_process`` does this once, before taking jobs)."""
    _RUNTIME.set(runtime)


def current_runtime() -> WorkerRuntime:
    runtime = _RUNTIME.get()
    if runtime is None:
        raise RuntimeError("no worker runtime: run jobs with `rcmseg worker` (worker.queue.worker_process)")
    return runtime


class JobReporter:
    """The engine's progress and cancel callbacks for one running job.

    Each progress report is written to the job's meta and keeps the job alive (worker, execution and
    job heartbeats), throttled to one write per ``report_interval_s`` except at stage changes. A
    worker that stops reporting is found abandoned after the heartbeat period and the job is retried or
    failed; so reports must come at least that often, which the engine's per-batch callbacks do.

    The cancel callback says stop when the owner asked (the cancel key exists) or when the job's mosaic is
    gone (deleted by its owner or expired): either is seen within ``cancel_poll_s`` of the next batch.
    A write that Redis refuses (out of memory, read-only, a full disk) is logged and the job goes on: its
    next report writes again. A Redis that cannot be reached fails the job's report, and the worker waits
    for Redis (``worker.queue.worker_process``).
    """

    def __init__(
        self, job: Job, runtime: WorkerRuntime, cancel_key: str, *, source: Path | None = None
    ) -> None:
        self.job = job
        self.runtime = runtime
        self.cancel_key = cancel_key
        self.source = source
        self.last_report = 0.0
        self.last_poll = 0.0
        self.canceled = False
        """The owner asked to cancel."""
        self.gone = False
        """The job's mosaic is gone."""

    def start(self) -> None:
        meta = self.job.meta
        meta[MetaKey.ATTEMPTS] = int(meta.get(MetaKey.ATTEMPTS, 0)) + 1
        meta.update(
            {
                MetaKey.STAGE: Stage.STARTING,
                MetaKey.PROGRESS: 0.0,
                MetaKey.WINDOWS_DONE: None,
                MetaKey.WINDOWS_TOTAL: None,
                MetaKey.ETA_S: None,
            }
        )
        meta.pop(MetaKey.ERROR, None)
        self._save()

    def progress(self, report: Progress) -> None:
        meta = self.job.meta
        stage_changed = meta.get(MetaKey.STAGE) != report.stage
        meta.update(
            {
                MetaKey.STAGE: report.stage,
                MetaKey.PROGRESS: overall_progress(report.stage, report.done, report.total),
                MetaKey.ETA_S: round(report.eta_s, 1) if report.eta_s is not None else None,
            }
        )
        if report.stage == Stage.WINDOWS:
            meta.update({MetaKey.WINDOWS_DONE: report.done, MetaKey.WINDOWS_TOTAL: report.total})
        now = time.monotonic()
        if stage_changed or now - self.last_report >= self.runtime.report_interval_s:
            self._save()

    def should_cancel(self) -> bool:
        now = time.monotonic()
        if not (self.canceled or self.gone) and now - self.last_poll >= self.runtime.cancel_poll_s:
            self.last_poll = now
            self.canceled = bool(self.job.connection.exists(self.cancel_key))
            self.gone = self.source is not None and not self.source.is_file()
        return self.canceled or self.gone

    def fail(self, code: str, message: str) -> None:
        """Record why the job failed and make sure RQ does not retry it: retries are for lost workers
        only, and this failure would happen again."""
        self.job.meta[MetaKey.ERROR] = {"code": code, "message": message}
        self.job.retries_left = 0
        self._save()

    def finish(self) -> None:
        self.job.meta.update({MetaKey.STAGE: Stage.FINISHED, MetaKey.PROGRESS: 1.0, MetaKey.ETA_S: None})
        self._save()

    def _save(self) -> None:
        self.last_report = time.monotonic()
        try:
            self.job.save_meta()
            self.runtime.keep_alive()
        except ResponseError as exc:  # Redis answers but refuses writes (out of memory, read-only, ...)
            log.warning("job %s: could not write its progress to Redis: %s", self.job.id, exc)


def run_segment_job(**kwargs: Unpack[SegmentJobKwargs]) -> dict[str, Any]:
    """Segment ``<data>/source`` into ``<data>/out_dir`` (written atomically by the engine)."""
    from worker.engine.pipeline import segment_mosaic  # torch: imported where the work is done

    runtime = current_runtime()
    job = get_current_job()
    if job is None:
        raise RuntimeError("run_segment_job must run inside an RQ job")
    src, out = runtime.data_dir / kwargs["source"], runtime.data_dir / kwargs["out_dir"]
    reporter = JobReporter(job, runtime, kwargs["cancel_key"], source=src)
    reporter.start()
    if (out / SUMMARY_FILE).is_file():
        log.info("job %s: result already complete, nothing to compute", job.id)
    else:
        run_recorded(
            reporter,
            lambda: segment_mosaic(
                src,
                runtime.model(kwargs["model"]),
                out,
                params=SegmentParams.from_job(kwargs["params"]),
                options=runtime.options,
                progress=reporter.progress,
                should_cancel=reporter.should_cancel,
                source_name=kwargs.get("source_name"),
            ),
            source=src,
            roots=[runtime.data_dir],
            done_elsewhere=(out / SUMMARY_FILE).is_file,  # an identical job finished the same result
        )
    reporter.finish()
    return {"out_dir": kwargs["out_dir"]}
