"""A finished job's files: Deep Zoom descriptors and tiles of its layers, the GeoJSON and the TIFFs.

Paths are built only from validated parts (a known layer name, integers, a known extension), never from
the request's text, so nothing outside the job's result folder (or its mosaic's pyramid) can be named.
Anything that is not an existing file of that job is a 404. A URL always gives the same bytes, so
responses are cacheable for good; coloured tiles carry a strong ETag and answer ``If-None-Match``.

Results written since pyramids are per mosaic: ``mosaic`` is the mosaic's pyramid, ``heatmap`` and ``mask``
the heat pyramid coloured per tile (``app.api.services.tiles``), regions at any threshold on request.
Results written before: the three layers are files of the result folder, served as they are.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from rq.job import Job

from app.api.deps import OwnerDep, QueueDep, StorageDep
from app.api.errors import FieldError, NotFound, error_responses
from app.api.file_responses import IMMUTABLE_HEADERS, immutable_file
from app.api.paths import INDEX
from app.api.services import tiles
from app.api.services.pyramids import Pyramids
from worker.contract import (
    DICOM_RESULT_FILES,
    HEAT_LAYER,
    LAYERS,
    MOSAIC_LAYER,
    PROBABILITY_DICOM,
    RESULT_FILES,
    SEGMENTATION_DICOM,
    SUMMARY_FILE,
    MetaKey,
    SummaryFields,
)
from worker.io.colormap import HEATMAP_COLORMAP, TRANSPARENT_BELOW
from worker.io.tiles import OutsidePyramid

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["results"])

TILE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg"}
FILES = RESULT_FILES
FILE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file.", "content": {t: {} for t in {*TILE_TYPES.values(), *FILES.values()}}}
}

Threshold = Annotated[
    float | None,
    Query(
        ge=0, le=1, description="Mask tiles and regions: heat at or above it is inside (default the job's)."
    ),
]
Colormap = Annotated[
    str, Query(description="Heatmap tiles: inferno, viridis, magma, plasma, cividis, turbo or gray.")
]
TransparentBelow = Annotated[
    float,
    Query(ge=0, le=1, description="Heatmap tiles: heat fades to transparent below it (0: none fades)."),
]


def _finished(job_id: str, owner: str, jobs: QueueDep, storage: StorageDep) -> tuple[Job, Path]:
    job = jobs.fetch(owner, job_id)
    folder = None
    if jobs.status(job) == "finished":
        folder = storage.result_dir(owner, str(job.meta[MetaKey.RESULT_KEY]))
    if folder is None:
        raise NotFound(f"job {job_id} has no result (yet)")
    return job, folder


@functools.lru_cache(maxsize=256)
def _summary_of(path: str, _mtime_ns: int) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _summary(folder: Path) -> SummaryFields:
    path = folder / SUMMARY_FILE
    return SummaryFields.read(_summary_of(str(path), path.stat().st_mtime_ns))


def _file(path: Path, media_type: str) -> FileResponse:
    return immutable_file(path, media_type, missing="no such file in this job's result")


def _mosaic_pyramid(job: Job, owner: str, jobs: QueueDep, storage: StorageDep) -> Path:
    """The pyramid of the job's mosaic; one that is missing (a mosaic uploaded before pyramids were per
    mosaic) is queued for building by the first request that needs it."""
    mosaic_id = str(job.meta.get(MetaKey.MOSAIC_ID, ""))
    pyramid = storage.pyramid_dir(owner, mosaic_id)
    if pyramid is not None:
        return pyramid
    record = storage.get_mosaic(owner, mosaic_id)
    if record is None:
        raise NotFound("this job's mosaic was deleted, and its pyramid with it")
    Pyramids(jobs).ensure(owner, record)
    raise NotFound("the pyramid of this job's mosaic is being prepared; ask again in a few seconds")


@router.get(
    "/dzi/{layer}.dzi",
    response_class=FileResponse,
    responses=error_responses(
        401,
        404,
        also={200: {"description": "Deep Zoom descriptor (XML).", "content": {"application/xml": {}}}},
    ),
    summary="Deep Zoom descriptor of a layer (mosaic, heatmap or mask)",
)
def get_dzi(job_id: str, layer: str, owner: OwnerDep, jobs: QueueDep, storage: StorageDep) -> FileResponse:
    """A query string on this URL (``?threshold=``, ``?colormap=``) is ignored here and carried over to the
    tiles by OpenSeadragon's Deep Zoom reader."""
    if layer not in LAYERS:
        raise NotFound(f"no layer {layer!r}; layers are {', '.join(LAYERS)}")
    job, folder = _finished(job_id, owner, jobs, storage)
    if not tiles.is_rendered(folder):
        return _file(folder / f"{layer}.dzi", "application/xml")
    if layer == MOSAIC_LAYER:
        return _file(_mosaic_pyramid(job, owner, jobs, storage) / f"{MOSAIC_LAYER}.dzi", "application/xml")
    return _file(folder / f"{HEAT_LAYER}.dzi", "application/xml")


@router.get(
    f"/dzi/{{layer}}_files/{{level:{INDEX}}}/{{col:{INDEX}}}_{{row:{INDEX}}}.{{ext}}",
    response_model=None,
    responses=error_responses(401, 404, 422, also={**FILE_RESPONSE, 304: {"description": "Not modified."}}),
    summary="One Deep Zoom tile; heatmap and mask tiles coloured as the query says",
)
def get_tile(
    request: Request,
    job_id: str,
    layer: str,
    level: int,
    col: int,
    row: int,
    ext: str,
    owner: OwnerDep,
    jobs: QueueDep,
    storage: StorageDep,
    threshold: Threshold = None,
    colormap: Colormap = HEATMAP_COLORMAP,
    transparent_below: TransparentBelow = TRANSPARENT_BELOW,
) -> Response:
    """Heatmap tiles: the heat through ``colormap``, fading out below ``transparent_below``. Mask tiles: heat
    at or above ``threshold`` (0..1, default the job's own) in cyan, the rest transparent. The heat is
    stored in 1/255 steps, so a mask tile differs from ``heat >= threshold`` only within 1/510 of it."""
    if layer not in LAYERS or ext not in TILE_TYPES:
        raise NotFound("no such tile")
    job, folder = _finished(job_id, owner, jobs, storage)
    if not tiles.is_rendered(folder):
        return _file(folder / f"{layer}_files" / str(level) / f"{col}_{row}.{ext}", TILE_TYPES[ext])
    if layer == MOSAIC_LAYER:
        pyramid = _mosaic_pyramid(job, owner, jobs, storage)
        return _file(pyramid / f"{MOSAIC_LAYER}_files" / str(level) / f"{col}_{row}.{ext}", TILE_TYPES[ext])
    try:
        tiles.check_colormap(colormap)
    except ValueError as exc:
        raise FieldError("colormap", str(exc)) from None
    if ext != "png":
        raise NotFound(f"{layer} tiles are PNG, not {ext}")
    job_threshold = _summary(folder).threshold
    style = tiles.TileStyle(
        colormap=colormap,
        transparent_below=transparent_below,
        threshold=job_threshold if threshold is None else threshold,
    )
    try:
        grey = tiles.heat_tile_path(folder, level, col, row)
    except OutsidePyramid as exc:
        error = NotFound(str(exc))
        error.field = exc.field  # type: ignore[attr-defined]
        raise error from None
    headers = {**IMMUTABLE_HEADERS, "ETag": tiles.etag(job.id, layer, level, col, row, style)}
    if request.headers.get("if-none-match") == headers["ETag"]:
        return Response(status_code=304, headers=headers)
    if not grey.is_file():
        raise NotFound("no such tile in this job's result")
    return Response(tiles.render_tile(grey, layer, style), media_type="image/png", headers=headers)


@router.get(
    "/regions.geojson",
    response_class=FileResponse,
    responses=error_responses(401, 404, 422, also={200: {"content": {"application/geo+json": {}}}}),
    summary="The regions (QuPath GeoJSON) at a threshold, computed from heatmap.tif on first request",
)
def get_regions(
    job_id: str, owner: OwnerDep, jobs: QueueDep, storage: StorageDep, threshold: Threshold = None
) -> FileResponse:
    """One polygon per connected region of ``heat >= threshold`` (default the job's threshold, the same as
    ``files/regions.geojson``), in full-resolution mosaic pixels. Computed once per threshold and kept with
    the result."""
    _, folder = _finished(job_id, owner, jobs, storage)
    summary = _summary(folder)
    job_threshold, downsample = summary.threshold, summary.downsample
    path = tiles.regions_at(
        folder,
        job_threshold if threshold is None else threshold,
        job_threshold=job_threshold,
        downsample=downsample,
    )
    return _file(path, "application/geo+json")


def _dicom_file(job_id: str, name: str, owner: str, jobs: QueueDep, storage: StorageDep) -> FileResponse:
    _, folder = _finished(job_id, owner, jobs, storage)
    if _summary(folder).input_format != "dicom":
        raise NotFound(
            f"job {job_id} segmented a mosaic that is not DICOM, so its result has no DICOM Segmentation "
            "(rcmseg dicomize makes a DICOM image of any mosaic)"
        )
    return _file(folder / name, DICOM_RESULT_FILES[name])


DICOM_RESPONSE = error_responses(401, 404, also={200: {"content": {"application/dicom": {}}}})


@router.get(
    f"/{SEGMENTATION_DICOM}",
    response_class=FileResponse,
    responses=DICOM_RESPONSE,
    summary="The mask as a BINARY DICOM Segmentation of the job's DICOM mosaic",
)
def get_segmentation_dicom(job_id: str, owner: OwnerDep, jobs: QueueDep, storage: StorageDep) -> FileResponse:
    return _dicom_file(job_id, SEGMENTATION_DICOM, owner, jobs, storage)


@router.get(
    f"/{PROBABILITY_DICOM}",
    response_class=FileResponse,
    responses=DICOM_RESPONSE,
    summary="The heat as a FRACTIONAL (probability) DICOM Segmentation of the job's DICOM mosaic",
)
def get_probability_dicom(job_id: str, owner: OwnerDep, jobs: QueueDep, storage: StorageDep) -> FileResponse:
    return _dicom_file(job_id, PROBABILITY_DICOM, owner, jobs, storage)


@router.get(
    "/files/{name}",
    response_class=FileResponse,
    responses=error_responses(401, 404, also=FILE_RESPONSE),
    summary="regions.geojson, heatmap.tif, mask.tif, heat_histogram.json or summary.json of a finished job",
)
def get_file(job_id: str, name: str, owner: OwnerDep, jobs: QueueDep, storage: StorageDep) -> FileResponse:
    if name not in FILES:
        raise NotFound(f"no file {name!r}; files are {', '.join(FILES)}")
    _, folder = _finished(job_id, owner, jobs, storage)
    return _file(folder / name, FILES[name])
