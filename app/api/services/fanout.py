"""A job shared out over workers (``parallel: N``): N band jobs and a merge job that depends on all of them.

The merge job carries the job's public id and meta, so listing, reuse, result links and expiry treat it as
any job; its meta's ``parts`` names the band jobs. Until the merge starts, the job's status and progress come
from the bands: running once any band has started, windows done summed over the bands, failed (or
canceled) when a band has failed with no retry left. Each band retries on its own when its worker dies;
the bands already written are kept (see ``worker.queue.band_jobs``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Literal

from redis import Redis
from rq import Queue
from rq.exceptions import InvalidJobOperation
from rq.job import Dependency, Job, JobStatus
from rq.serializers import JSONSerializer

from app.api.services.queue_options import segment_job_options
from app.settings import WorkerSettings
from worker.contract import (
    BAND_FUNCTION,
    MERGE_FUNCTION,
    BandJobKwargs,
    ErrorCode,
    MergeJobKwargs,
    MetaKey,
    SegmentJobKwargs,
    Stage,
    band_job_id,
    overall_progress,
    parts_key,
    parts_relpath,
)

PartsStatus = Literal["queued", "running", "failed", "canceled"]


def enqueue_parts(
    queue: Queue,
    settings: WorkerSettings,
    *,
    job_id: str,
    kwargs: SegmentJobKwargs,
    meta: Mapping[MetaKey, object],
    parallel: int,
    description: str,
) -> Job:
    """Queue ``parallel`` band jobs and the merge job that waits for them; returns the merge job."""
    key = parts_key(
        source=kwargs["source"], model=kwargs["model"], params=kwargs["params"], parallel=parallel
    )
    parts_dir = parts_relpath(kwargs["out_dir"], job_id, key)
    options = segment_job_options(settings)
    bands: list[Job | Dependency | str] = []
    for i in range(parallel):
        band: BandJobKwargs = {
            "job_id": job_id,
            "source": kwargs["source"],
            "model": kwargs["model"],
            "params": kwargs["params"],
            "parts_dir": parts_dir,
            "parts_key": key,
            "band": i,
            "parallel": parallel,
            "cancel_key": kwargs["cancel_key"],
        }
        bands.append(
            queue.enqueue_call(
                func=BAND_FUNCTION,
                kwargs=dict(band),
                ttl=settings.retention_s,
                job_id=band_job_id(job_id, i),
                meta={MetaKey.PART_OF: job_id, MetaKey.STAGE: Stage.QUEUED, MetaKey.ATTEMPTS: 0},
                **options,
                description=f"band {i + 1} of {parallel}: {description}",
            )
        )
    merge: MergeJobKwargs = {
        "job_id": job_id,
        "source": kwargs["source"],
        "out_dir": kwargs["out_dir"],
        "model": kwargs["model"],
        "params": kwargs["params"],
        "parts_dir": parts_dir,
        "parts_key": key,
        "parallel": parallel,
        "cancel_key": kwargs["cancel_key"],
    }
    if "source_name" in kwargs:
        merge["source_name"] = kwargs["source_name"]
    return queue.enqueue_call(
        func=MERGE_FUNCTION,
        kwargs=dict(merge),
        job_id=job_id,
        meta={**meta, MetaKey.PARTS: [band_job_id(job_id, i) for i in range(parallel)]},
        **options,
        depends_on=bands,
        description=description,
    )


def parts_of(redis: Redis, job: Job) -> list[Job]:
    """The band jobs of a shared-out job that still exist."""
    ids = [str(i) for i in job.meta.get(MetaKey.PARTS) or []]
    return [p for p in Job.fetch_many(ids, connection=redis, serializer=JSONSerializer) if p is not None]


def parts_status(redis: Redis, job: Job) -> PartsStatus:
    """A waiting merge job's status from its bands."""
    statuses = []
    for part in parts_of(redis, job):
        status = part.get_status(refresh=False)
        if status in (JobStatus.CANCELED, JobStatus.STOPPED):
            return "canceled"
        if status == JobStatus.FAILED:
            code = (part.meta.get(MetaKey.ERROR) or {}).get("code")
            return "canceled" if code == ErrorCode.CANCELED else "failed"
        statuses.append(status)
    return "running" if any(s in (JobStatus.STARTED, JobStatus.FINISHED) for s in statuses) else "queued"


def with_parts(redis: Redis, job: Job, view: dict[str, Any]) -> dict[str, Any]:
    """The public view of a shared-out job, its windows and progress summed over the bands while the merge
    waits. Its attempts are the most any part made (a band retried
    after its worker died counts)."""
    parts = parts_of(redis, job)
    view["parallel"] = len(job.meta.get(MetaKey.PARTS) or [])
    done = sum(int(p.meta.get(MetaKey.WINDOWS_DONE) or 0) for p in parts)
    total = sum(int(p.meta.get(MetaKey.WINDOWS_TOTAL) or 0) for p in parts)
    known = bool(parts) and all(p.meta.get(MetaKey.WINDOWS_TOTAL) is not None for p in parts)
    view["windows_done"] = done if done or known else None
    view["windows_total"] = total if known else None
    attempts = [int(p.meta.get(MetaKey.ATTEMPTS) or 0) for p in parts]
    view["attempts"] = max([int(view.get("attempts") or 0), *attempts])
    if job.get_status(refresh=False) != JobStatus.DEFERRED:
        return view
    if view["status"] == "running":
        view["stage"] = Stage.WINDOWS
        view["progress"] = overall_progress(Stage.WINDOWS, done, total if known else 0)
        etas = [float(p.meta[MetaKey.ETA_S]) for p in parts if p.meta.get(MetaKey.ETA_S) is not None]
        view["eta_s"] = max(etas) if etas else None
        view["started_at"] = view["started_at"] or _first_start(parts)
    return view


def ended_parts(redis: Redis, job: Job) -> list[Job]:
    """The bands of a shared-out job that failed or were canceled (whose failure is the job's)."""
    ended = (JobStatus.FAILED, JobStatus.CANCELED, JobStatus.STOPPED)
    return [p for p in parts_of(redis, job) if p.get_status(refresh=False) in ended]


def started(redis: Redis, job: Job) -> bool:
    """Whether a shared-out job has begun: any of its bands started (or finished)."""
    return any(p.started_at is not None for p in parts_of(redis, job))


def _first_start(parts: list[Job]) -> str | None:
    starts = [p.started_at for p in parts if p.started_at is not None]
    return min(starts).isoformat() if starts else None


def cancel_parts(redis: Redis, job: Job) -> None:
    """Cancel the queued bands of a shared-out job (running ones stop on the shared cancel key)."""
    for part in parts_of(redis, job):
        if part.get_status(refresh=True) in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            with contextlib.suppress(InvalidJobOperation):
                part.cancel()
