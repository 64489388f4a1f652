"""``/v1/mosaics/{id}/dzi``: a stored mosaic's own Deep Zoom pyramid, shown before any job on it finishes.

The pyramid is built once after the upload (``GET /v1/mosaics/{id}`` says ``pyramid: ready``); until then
these routes answer 404. Paths are built from the mosaic id (checked against the owner's folder) and
integers only; the pyramid never changes, so tiles are cacheable for good.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.api.deps import OwnerDep, StorageDep
from app.api.errors import NotFound, error_responses
from app.api.file_responses import immutable_file
from app.api.paths import INDEX
from worker.contract import MOSAIC_FORMAT, MOSAIC_LAYER

router = APIRouter(prefix="/v1/mosaics/{mosaic_id}/dzi", tags=["mosaics"])


def _pyramid(owner: str, mosaic_id: str, storage: StorageDep) -> Path:
    if storage.mosaic_dir(owner, mosaic_id) is None:
        raise NotFound(f"no mosaic {mosaic_id!r}")
    folder = storage.pyramid_dir(owner, mosaic_id)
    if folder is None:
        raise NotFound(f"the pyramid of mosaic {mosaic_id} is not ready yet")
    return folder


def _file(path: Path, media_type: str) -> FileResponse:
    return immutable_file(path, media_type, missing="no such tile in this mosaic's pyramid")


@router.get(
    f"/{MOSAIC_LAYER}.dzi",
    response_class=FileResponse,
    responses=error_responses(
        401,
        404,
        also={200: {"description": "Deep Zoom descriptor (XML).", "content": {"application/xml": {}}}},
    ),
    summary="Deep Zoom descriptor of the mosaic's pyramid",
)
def get_mosaic_dzi(mosaic_id: str, owner: OwnerDep, storage: StorageDep) -> FileResponse:
    return _file(_pyramid(owner, mosaic_id, storage) / f"{MOSAIC_LAYER}.dzi", "application/xml")


@router.get(
    f"/{MOSAIC_LAYER}_files/{{level:{INDEX}}}/{{col:{INDEX}}}_{{row:{INDEX}}}.{MOSAIC_FORMAT}",
    response_class=FileResponse,
    responses=error_responses(
        401, 404, also={200: {"description": "A JPEG tile.", "content": {"image/jpeg": {}}}}
    ),
    summary="One tile of the mosaic's pyramid",
)
def get_mosaic_tile(
    mosaic_id: str, level: int, col: int, row: int, owner: OwnerDep, storage: StorageDep
) -> FileResponse:
    folder = _pyramid(owner, mosaic_id, storage)
    return _file(folder / f"{MOSAIC_LAYER}_files" / str(level) / f"{col}_{row}.{MOSAIC_FORMAT}", "image/jpeg")
