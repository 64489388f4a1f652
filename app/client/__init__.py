"""A Python client of a running rcmseg service (what ``rcmseg submit`` uses), for scripts and batch work.

    from app.client import RcmsegClient, ServiceError

    with RcmsegClient("http://127.0.0.1:8000", token) as client:
        mosaic = client.upload_mosaic(Path("lesion.tif"))
        job = client.wait_for_job(client.submit_job(mosaic.id).id)
        client.download_result(job.id, Path("out/lesion"))

``Batch`` runs many files the way ``rcmseg submit`` does. Needs httpx; imports no torch.
"""

from __future__ import annotations

from app.client.batch import Batch, BatchProgress, JobRequest, Outcome
from app.client.client import RESULT_DOWNLOADS, RcmsegClient
from app.client.errors import ServiceError
from app.client.inputs import find_inputs
from app.client.responses import Job, JobError, Model, Mosaic

__all__ = [
    "RESULT_DOWNLOADS",
    "Batch",
    "BatchProgress",
    "Job",
    "JobError",
    "JobRequest",
    "Model",
    "Mosaic",
    "Outcome",
    "RcmsegClient",
    "ServiceError",
    "find_inputs",
]
