"""The RQ options every segmentation job shares, a plain job and each part of a shared-out one alike."""

from __future__ import annotations

from typing import Any

from rq import Retry

from app.settings import WorkerSettings


def segment_job_options(settings: WorkerSettings) -> dict[str, Any]:
    """Timeout, how long results and failures are kept, and retries, as ``Queue.enqueue_call`` takes them."""
    retention = settings.retention_s
    return {
        "timeout": settings.job_timeout_s,
        "result_ttl": retention,
        "failure_ttl": retention,
        "retry": Retry(max=settings.job_retries) if settings.job_retries else None,
    }
