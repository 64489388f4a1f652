"""A finished job's files: Deep Zoom descriptors and tiles of three layers, the GeoJSON and the TIFFs.

Paths are built only from validated parts (a known layer name, integers, a known extension), never from
the request's text, so nothing outside the job's result folder can be named. Anything that is not an
existing file of that job is a 404. Results never change once written, so they are cacheable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.api.deps import OwnerDep, QueueDep, StorageDep
from app.api.errors import NotFound, error_responses
from worker.contract import LAYERS, RESULT_FILES, MetaKey

router = APIRouter(prefix="/v1/jobs/{job_id}", tags=["results"])

TILE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg"}
FILES = RESULT_FILES
CACHE = "private, max-age=86400, immutable"
FILE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"description": "The file.", "content": {t: {} for t in {*TILE_TYPES.values(), *FILES.values()}}}
}


def _result_dir(job_id: str, owner: str, jobs: QueueDep, storage: StorageDep) -> Path:
    job = jobs.fetch(owner, job_id)
    folder = None
    if jobs.status(job) == "finished":
        folder = storage.result_dir(owner, str(job.meta[MetaKey.RESULT_KEY]))
    if folder is None:
        raise NotFound(f"job {job_id} has no result (yet)")
    return folder


def _file(path: Path, media_type: str) -> FileResponse:
    if not path.is_file():
        raise NotFound("no such file in this job's result")
    return FileResponse(
        path, media_type=media_type, headers={"Cache-Control": CACHE, "Vary": "Authorization"}
    )


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
    if layer not in LAYERS:
        raise NotFound(f"no layer {layer!r}; layers are {', '.join(LAYERS)}")
    return _file(_result_dir(job_id, owner, jobs, storage) / f"{layer}.dzi", "application/xml")


@router.get(
    "/dzi/{layer}_files/{level:int}/{col:int}_{row:int}.{ext}",
    response_class=FileResponse,
    responses=error_responses(401, 404, also=FILE_RESPONSE),
    summary="One Deep Zoom tile",
)
def get_tile(
    job_id: str,
    layer: str,
    level: int,
    col: int,
    row: int,
    ext: str,
    owner: OwnerDep,
    jobs: QueueDep,
    storage: StorageDep,
) -> FileResponse:
    if layer not in LAYERS or ext not in TILE_TYPES:
        raise NotFound("no such tile")
    folder = _result_dir(job_id, owner, jobs, storage)
    return _file(folder / f"{layer}_files" / str(level) / f"{col}_{row}.{ext}", TILE_TYPES[ext])


@router.get(
    "/files/{name}",
    response_class=FileResponse,
    responses=error_responses(401, 404, also=FILE_RESPONSE),
    summary="regions.geojson, heatmap.tif, mask.tif or summary.json of a finished job",
)
def get_file(job_id: str, name: str, owner: OwnerDep, jobs: QueueDep, storage: StorageDep) -> FileResponse:
    if name not in FILES:
        raise NotFound(f"no file {name!r}; files are {', '.join(FILES)}")
    return _file(_result_dir(job_id, owner, jobs, storage) / name, FILES[name])
