"""The queue job: segment one uploaded mosaic, report progress into the job's meta, heed cancellation.

The API enqueues ``worker.queue.job.run_segment_job`` by name with JSON keyword arguments (paths relative to
the data folder, a zoo model name, the engine parameters, the Redis key that asks for cancellation). The
worker process (``worker.queue.worker_process``) loads its models once and installs a ``WorkerRuntime``
here before it takes jobs; the job only looks models up.

Job meta written while it runs: ``stage``, ``windows_done``, ``windows_total``, ``progress`` (0..1 over
the stages), ``eta_s``, ``attempts``, and ``error`` ``{code, message}`` when it fails.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Unpack

from rq import get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

from models.errors import RcmSegError
from worker.contract import STAGE_SPAN, SUMMARY_FILE, ErrorCode, MetaKey, SegmentJobKwargs
from worker.engine.options import RunOptions
from worker.errors import JobCanceled
from worker.io.checkpoint import LoadedModel, load_model
from worker.io.zoo import zoo_model
from worker.params import SegmentParams
from worker.progress import Progress

log = logging.getLogger(__name__)


class MosaicGone(RcmSegError, FileNotFoundError):
    """The job's mosaic was deleted (by its owner, or expired) before the job read it."""

    code = ErrorCode.MOSAIC_GONE.value


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
    """

    def __init__(self, job: Job, runtime: WorkerRuntime, cancel_key: str) -> None:
        self.job = job
        self.runtime = runtime
        self.cancel_key = cancel_key
        self.last_report = 0.0
        self.last_poll = 0.0
        self.canceled = False

    def start(self) -> None:
        meta = self.job.meta
        meta[MetaKey.ATTEMPTS] = int(meta.get(MetaKey.ATTEMPTS, 0)) + 1
        meta.update(
            {
                MetaKey.STAGE: "starting",
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
        lo, hi = STAGE_SPAN.get(report.stage, (0.0, 1.0))
        fraction = report.done / report.total if report.total > 0 else 0.0
        stage_changed = meta.get(MetaKey.STAGE) != report.stage
        meta.update(
            {
                MetaKey.STAGE: report.stage,
                MetaKey.PROGRESS: round(lo + (hi - lo) * min(max(fraction, 0.0), 1.0), 4),
                MetaKey.ETA_S: round(report.eta_s, 1) if report.eta_s is not None else None,
            }
        )
        if report.stage == "windows":
            meta.update({MetaKey.WINDOWS_DONE: report.done, MetaKey.WINDOWS_TOTAL: report.total})
        now = time.monotonic()
        if stage_changed or now - self.last_report >= self.runtime.report_interval_s:
            self._save()

    def should_cancel(self) -> bool:
        now = time.monotonic()
        if not self.canceled and now - self.last_poll >= self.runtime.cancel_poll_s:
            self.last_poll = now
            self.canceled = bool(self.job.connection.exists(self.cancel_key))
        return self.canceled

    def fail(self, code: str, message: str) -> None:
        """Record why the job failed and make sure RQ does not retry it: retries are for lost workers
        only, and this failure would happen again."""
        self.job.meta[MetaKey.ERROR] = {"code": code, "message": message}
        self.job.retries_left = 0
        self._save()

    def finish(self) -> None:
        self.job.meta.update({MetaKey.STAGE: "finished", MetaKey.PROGRESS: 1.0, MetaKey.ETA_S: None})
        self._save()

    def _save(self) -> None:
        self.last_report = time.monotonic()
        self.job.save_meta()
        self.runtime.keep_alive()


def _public(message: str, paths: dict[Path, str]) -> str:
    """An error message without the worker's file system paths."""
    for path, name in paths.items():
        message = message.replace(str(path), name)
    return message


def run_segment_job(**kwargs: Unpack[SegmentJobKwargs]) -> dict[str, Any]:
    """Segment ``<data>/source`` into ``<data>/out_dir`` (written atomically by the engine)."""
    source, out_dir, model = kwargs["source"], kwargs["out_dir"], kwargs["model"]
    params, cancel_key = kwargs["params"], kwargs["cancel_key"]
    from worker.engine.pipeline import segment_mosaic  # torch: imported where the work is done

    runtime = current_runtime()
    job = get_current_job()
    if job is None:
        raise RuntimeError("run_segment_job must run inside an RQ job")
    reporter = JobReporter(job, runtime, cancel_key)
    reporter.start()
    src, out = runtime.data_dir / source, runtime.data_dir / out_dir
    paths = {src: src.name, out: "the result folder", runtime.data_dir: "<data>"}
    try:
        if (out / SUMMARY_FILE).is_file():
            log.info("job %s: result already complete, nothing to compute", job.id)
        else:
            if reporter.should_cancel():
                raise JobCanceled("canceled before it started")
            if not src.is_file():
                raise MosaicGone("the mosaic was deleted before the job could read it")
            segment_mosaic(
                src,
                runtime.model(model),
                out,
                params=SegmentParams.from_job(params),
                options=runtime.options,
                progress=reporter.progress,
                should_cancel=reporter.should_cancel,
                source_name=kwargs.get("source_name"),
            )
    except JobCanceled as exc:
        reporter.fail(exc.code, str(exc))
        log.info("job %s canceled", job.id)
        raise
    except RcmSegError as exc:
        if (out / SUMMARY_FILE).is_file():  # an identical job finished the same result first
            return {"out_dir": out_dir}
        if not src.is_file():  # deleted while it was read: that, not "damaged", is the reason
            gone = MosaicGone("the mosaic was deleted before the job could read it")
            reporter.fail(gone.code, str(gone))
            raise gone from None
        reporter.fail(exc.code, _public(str(exc), paths))
        raise
    except JobTimeoutException:
        reporter.fail(ErrorCode.JOB_TIMEOUT, f"the job ran longer than its timeout ({job.timeout} s)")
        raise
    except Exception as exc:
        if not src.is_file():
            reporter.fail(ErrorCode.MOSAIC_GONE, "the mosaic was deleted before the job could read it")
            raise MosaicGone("the mosaic was deleted before the job could read it") from None
        reporter.fail(ErrorCode.INTERNAL, f"{type(exc).__name__}: {_public(str(exc), paths)}"[:500])
        raise
    reporter.finish()
    return {"out_dir": out_dir}
