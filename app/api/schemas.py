"""Request and response bodies of the HTTP API, with their constraints (they are the OpenAPI schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.card import MethodDefaults
from worker.params import MethodParams

ID = r"^[0-9a-f]{32}$"


class MosaicOut(BaseModel):
    """An accepted mosaic. The same bytes uploaded again by the same owner give the same id."""

    id: str = Field(pattern=ID)
    sha256: str
    width: int
    height: int
    bands: int
    bit_depth: int
    format: str = Field(description="tiff, png, jpeg, bmp or dicom")
    size_bytes: int
    filename: str = Field(description="The file name the client sent (informational only).")
    created_at: str = Field(description="When it was first uploaded (ISO 8601, UTC).")
    existing: bool = Field(False, description="True when these bytes had been uploaded before.")
    pyramid: Literal["ready", "preparing"] | None = Field(
        None,
        description="The mosaic's own Deep Zoom pyramid, built once in the background after the upload and "
        "shared by every job on it: 'ready' once ``dzi`` can be opened.",
    )
    dzi: str | None = Field(None, description="The pyramid's descriptor (``mosaic_files/`` beside it).")


class MosaicList(BaseModel):
    mosaics: list[MosaicOut]


class JobCreate(MethodParams):
    """Segment an uploaded mosaic: the method's parameters (``worker.params.MethodParams``, one schema from
    here to the engine) and what to run them on. Omitted method fields (cam, step, sigma, threshold) take
    the model card's defaults (``defaults`` in GET /v1/models); the result's summary says which came from
    where."""

    model_config = ConfigDict(protected_namespaces=())

    mosaic_id: str = Field(pattern=ID, description="From POST /v1/mosaics.")
    model: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="A model of GET /v1/models; default RCMSEG_DEFAULT_MODEL.",
    )


class JobError(BaseModel):
    code: str = Field(description="canceled, worker_lost, job_timeout, unreadable_mosaic, ... ")
    message: str


class Layers(BaseModel):
    """Deep Zoom (DZI) descriptors; tiles are under ``<layer>_files/<level>/<col>_<row>.<ext>``.

    In results written since pyramids are per mosaic, ``mosaic`` is the mosaic's own pyramid and ``heatmap``
    and ``mask`` are the heat at processing resolution, coloured per tile on request: heatmap tiles take
    ``?colormap=`` and ``?transparent_below=``, mask tiles ``?threshold=`` (0..1, default the job's). A query
    on the descriptor's URL is carried over to its tiles by OpenSeadragon. Draw each layer
    ``summary.layers[layer].width * scale / mosaic width`` viewport units wide to overlay them.
    """

    mosaic: str
    heatmap: str
    mask: str


class JobResult(BaseModel):
    summary: dict[str, Any] = Field(description="The engine's summary.json.")
    layers: Layers
    geojson: str
    heatmap_tiff: str
    mask_tiff: str
    histogram: str | None = Field(
        None,
        description="heat_histogram.json: pixel counts of heat per 1/bins, for the area at any threshold "
        "(results written before it have none).",
    )
    regions: str | None = Field(
        None, description="The regions GeoJSON at the threshold given as ``?threshold=`` (default the job's)."
    )


class JobOut(BaseModel):
    """A job. ``progress`` runs 0..1 over the stages read, windows and export."""

    model_config = ConfigDict(protected_namespaces=())

    id: str = Field(pattern=ID)
    status: Literal["queued", "running", "finished", "failed", "canceled"]
    mosaic_id: str
    model: str
    params: dict[str, Any] = Field(description="The parameters as requested.")
    reused: bool = Field(
        description="True in a POST answer that returns an earlier job with the same mosaic, model and "
        "parameters (finished, or still queued or running) instead of computing again."
    )
    cancel_requested: bool
    progress: float = Field(ge=0, le=1)
    stage: str | None
    windows_done: int | None
    windows_total: int | None
    eta_s: float | None
    attempts: int = Field(description="How many times a worker started this job (more than 1 after a crash).")
    parallel: int = Field(1, description="Workers the job is shared out over (its bands); 1 for a plain job.")
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    error: JobError | None
    result: JobResult | None


class JobList(BaseModel):
    jobs: list[JobOut]


class ModelOut(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str = Field(description="The value for a job's 'model' field.")
    default: bool
    defaults: MethodDefaults = Field(
        description='What a job that does not say gets: cam, step, sigma ("none": plain averaging), '
        "threshold, and how they were chosen (chosen_by)."
    )
    intended_use: str = Field(description="What the model is fit for; shown beside every result.")
    card: dict[str, Any]


class ModelList(BaseModel):
    models: list[ModelOut]


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    redis: bool
    workers: int
    disk: bool = Field(True, description="The data folder has at least RCMSEG_MIN_FREE_BYTES free.")
    reasons: list[str] = Field(default_factory=list, description="Why the service is not ready.")
