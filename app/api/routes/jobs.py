"""``/v1/jobs``: submit, poll, list and cancel segmentation jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from app.api.deps import OwnerDep, QueueDep, SettingsDep, StorageDep
from app.api.errors import FieldError, NotFound, error_responses
from app.api.schemas import JobCreate, JobList, JobOut
from app.api.services.identity import choose_model
from app.storage import MosaicRecord
from models.card import ModelCard
from models.errors import InvalidParameter
from worker.params import SegmentParams
from worker.plan import plan_for

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _segment_params(
    body: JobCreate, card: ModelCard, mosaic: MosaicRecord, *, parallel: int
) -> SegmentParams:
    """The request's parameters with the card's defaults, checked against the mosaic as the engine will
    run it (the same validation as the command line's), so a job that would fail is refused now."""
    params = body.resolve(card.method_defaults(), parallel=parallel)
    try:
        plan_for(params, mosaic, card)
    except InvalidParameter as exc:
        if exc.field == "mosaic":  # the request names the mosaic by its id
            raise FieldError("mosaic_id", str(exc)) from None
        raise
    return params


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses=error_responses(
        401,
        404,
        422,
        also={200: {"model": JobOut, "description": "An identical job had finished (not recomputed)."}},
    ),
    summary="Segment a mosaic",
)
def create_job(
    body: JobCreate,
    request: Request,
    response: Response,
    owner: OwnerDep,
    jobs: QueueDep,
    storage: StorageDep,
    settings: SettingsDep,
) -> JobOut:
    """Queue a job (202, ``Location`` names it). The same mosaic, model and parameters return the earlier
    job instead, with ``reused: true``: 200 when it has finished, 202 while it is still queued or running."""
    mosaic = storage.get_mosaic(owner, body.mosaic_id)
    if mosaic is None:
        raise NotFound(f"mosaic_id: no mosaic {body.mosaic_id!r}")
    model = choose_model(settings.model_zoo, body.model or settings.default_model)
    params = _segment_params(body, model.card, mosaic, parallel=settings.default_parallel)
    requested = body.model_dump(exclude={"mosaic_id", "model"})
    job, reused = jobs.submit(owner, mosaic, model, params, requested)
    view = jobs.view(job, reused=reused, base=_base(request))
    if reused and view.status == "finished":
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"{_base(request)}/v1/jobs/{job.id}"
    return view


@router.get(
    "", response_model=JobList, responses=error_responses(401), summary="List your jobs, newest first"
)
def list_jobs(
    request: Request, owner: OwnerDep, jobs: QueueDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> JobList:
    return JobList(jobs=[jobs.view(j, base=_base(request)) for j in jobs.list(owner, limit=limit)])


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(401, 404), summary="Poll a job")
def get_job(job_id: str, request: Request, owner: OwnerDep, jobs: QueueDep) -> JobOut:
    job = jobs.fetch(owner, job_id)
    if jobs.status(job) == "running":
        # A running job whose worker died is retried or failed here, not only by the next idle worker.
        jobs.reap_abandoned()
        job.refresh()
    return jobs.view(job, base=_base(request))


@router.delete(
    "/{job_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses=error_responses(401, 404, 409),
    summary="Cancel a queued or running job",
)
def cancel_job(job_id: str, request: Request, owner: OwnerDep, jobs: QueueDep) -> JobOut:
    """A queued job is canceled at once; a running one stops between batches (its worker is then free)
    and reads ``canceled`` when it has. Poll the job to see it stop."""
    job = jobs.cancel(jobs.fetch(owner, job_id))
    return jobs.view(job, base=_base(request))
