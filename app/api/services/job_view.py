"""A job as the API shows it: RQ's status mapped to the public one, progress, errors, result links."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from redis import Redis
from rq.job import Job, JobStatus

from app.api.schemas import JobOut
from app.api.services.fanout import ended_parts, parts_status, started, with_parts
from app.storage import Storage
from worker.contract import (
    HEAT_HISTOGRAM,
    HEATMAP_TIFF,
    LAYERS,
    MASK_TIFF,
    REGIONS_GEOJSON,
    ErrorCode,
    MetaKey,
    SummaryFields,
)

PublicStatus = Literal["queued", "running", "finished", "failed", "canceled"]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def public_status(redis: Redis, job: Job) -> PublicStatus:
    """RQ's status of a job as the API reports it."""
    rq_status = job.get_status(refresh=False)
    if rq_status in (JobStatus.CANCELED, JobStatus.STOPPED):
        return "canceled"
    if rq_status == JobStatus.STARTED:
        return "running"
    if rq_status == JobStatus.FINISHED:
        return "finished"
    if rq_status == JobStatus.FAILED:
        canceled = (job.meta.get(MetaKey.ERROR) or {}).get("code") == ErrorCode.CANCELED
        return "canceled" if canceled else "failed"
    if job.meta.get(MetaKey.PARTS) and rq_status == JobStatus.DEFERRED:  # a merge waiting for its bands
        return parts_status(redis, job)
    return "queued"  # queued, deferred, scheduled (a retry waiting for its slot)


def job_view(
    redis: Redis, storage: Storage, job: Job, *, cancel_requested: bool, reused: bool = False, base: str = ""
) -> JobOut:
    """The public body of a job; ``reused`` when a submission returned it instead of a new job."""
    meta = job.meta
    owner = str(meta[MetaKey.OWNER])
    status = public_status(redis, job)
    error = None
    result = None
    fields = None
    if status == "finished":
        summary = storage.read_summary(owner, str(meta[MetaKey.RESULT_KEY]))
        if summary is None:
            status = "failed"
            error = {
                "code": ErrorCode.RESULT_EXPIRED,
                "message": "the result was deleted after the retention period",
            }
        else:
            fields = SummaryFields.read(summary)
            result = _result_links(job.id, summary, fields, base)
    elif status == "failed":
        error = _failure(redis, job)
    elif status == "canceled":
        error = _recorded(job) or _parts_error(redis, job) or _cancel_error(redis, job)
    progress = 1.0 if status == "finished" else float(meta.get(MetaKey.PROGRESS, 0.0))
    body = {
        "id": job.id,
        "status": status,
        "mosaic_id": meta.get(MetaKey.MOSAIC_ID),
        "model": meta.get(MetaKey.MODEL),
        "params": meta.get(MetaKey.PARAMS, {}),
        "reused": reused,
        "cancel_requested": cancel_requested,
        "progress": progress,
        "stage": meta.get(MetaKey.STAGE) if status == "running" else status,
        "windows_done": meta.get(MetaKey.WINDOWS_DONE),
        "windows_total": meta.get(MetaKey.WINDOWS_TOTAL),
        "eta_s": meta.get(MetaKey.ETA_S) if status == "running" else None,
        "attempts": meta.get(MetaKey.ATTEMPTS, 0),
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(_ended_at(job)) if status in ("finished", "failed", "canceled") else None,
        "error": error,
        "result": result,
    }
    if meta.get(MetaKey.PARTS):
        body = with_parts(redis, job, body)
        if fields is not None and fields.bands:  # ``parallel`` is a ceiling: the bands that ran
            body["parallel"] = fields.bands
    return JobOut.model_validate(body)


def _cancel_error(redis: Redis, job: Job) -> dict[str, str]:
    """Why a canceled job that recorded no reason stopped: before it started, or while it ran (a job shared
    out over workers ran as soon as one of its bands did)."""
    ran = job.started_at is not None or (bool(job.meta.get(MetaKey.PARTS)) and started(redis, job))
    message = "canceled while it ran" if ran else "canceled before it started"
    return {"code": ErrorCode.CANCELED, "message": message}


def _ended_at(job: Job) -> datetime | None:
    """When an ended job ended: RQ's ``ended_at``, else (a job failed as abandoned, or canceled
    before it ran) the time its last result or its last heartbeat was recorded."""
    if job.ended_at is not None:
        return job.ended_at
    latest = job.latest_result()
    if latest is not None and latest.created_at is not None:
        return latest.created_at
    return job.last_heartbeat or job.started_at or job.created_at


def _result_links(
    job_id: str, summary: dict[str, object], fields: SummaryFields, base: str
) -> dict[str, Any]:
    root = f"{base}/v1/jobs/{job_id}"
    rendered = fields.rendered
    return {
        "summary": summary,
        "layers": {layer: f"{root}/dzi/{layer}.dzi" for layer in LAYERS},
        "geojson": f"{root}/files/{REGIONS_GEOJSON}",
        "heatmap_tiff": f"{root}/files/{HEATMAP_TIFF}",
        "mask_tiff": f"{root}/files/{MASK_TIFF}",
        # Results written since the heat is stored as a pyramid list their layers (and have these).
        "histogram": f"{root}/files/{HEAT_HISTOGRAM}" if rendered else None,
        "regions": f"{root}/regions.geojson" if rendered else None,
    }


def _recorded(job: Job) -> dict[str, str] | None:
    """The error the worker recorded in the job's meta, if any."""
    recorded = job.meta.get(MetaKey.ERROR)
    if isinstance(recorded, dict) and "code" in recorded:
        return {"code": str(recorded["code"]), "message": str(recorded.get("message", ""))}
    return None


def _parts_error(redis: Redis, job: Job) -> dict[str, str] | None:
    """A shared-out job's error: that of the first of its bands that failed (or was canceled)."""
    if not job.meta.get(MetaKey.PARTS):
        return None
    for part in ended_parts(redis, job):
        if part.get_status(refresh=False) == JobStatus.FAILED:
            return _failure(redis, part)
        if _recorded(part) is not None:
            return _recorded(part)
    return None


def _failure(redis: Redis, job: Job) -> dict[str, str]:
    """Why a failed job failed: the error its worker recorded, its failed band's, a lost worker's (a job
    whose worker died with no retry left records nothing), or an unexpected failure."""
    recorded = _recorded(job) or _parts_error(redis, job)
    if recorded is not None:
        return recorded
    latest = job.latest_result()
    if latest is not None and "AbandonedJobError" in (latest.exc_string or ""):
        return {
            "code": ErrorCode.WORKER_LOST,
            "message": "the worker running this job stopped reporting (killed, out of memory or crashed) "
            "and no retry was left",
        }
    return {
        "code": ErrorCode.INTERNAL,
        "message": "the job failed unexpectedly; the worker log has the details",
    }
