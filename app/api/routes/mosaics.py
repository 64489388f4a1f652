"""``/v1/mosaics``: upload, list, read and delete an owner's mosaics."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool

from app.api.deps import OwnerDep, QueueDep, SettingsDep, StorageDep
from app.api.errors import NotFound, UnsupportedMediaType, error_responses
from app.api.schemas import MosaicList, MosaicOut
from app.api.services.pyramids import Pyramids
from app.api.services.uploads import FILE_FIELD, receive_upload
from app.storage import MosaicRecord, sniff_format
from models.errors import RcmSegError
from worker.errors import UnreadableMosaic
from worker.io.mosaic import MosaicHeader, verify_readable

router = APIRouter(prefix="/v1/mosaics", tags=["mosaics"])

UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": [FILE_FIELD],
                    "properties": {FILE_FIELD: {"type": "string", "format": "binary"}},
                }
            }
        },
    }
}


def _out(record: MosaicRecord, owner: str, jobs: QueueDep, *, existing: bool = False) -> MosaicOut:
    """The public body; reading a mosaic whose pyramid is missing queues the job that builds it."""
    data = asdict(record)
    data.pop("source")
    pyramid = Pyramids(jobs).state(owner, record)
    return MosaicOut(
        **data, existing=existing, pyramid=pyramid, dzi=f"/v1/mosaics/{record.id}/dzi/mosaic.dzi"
    )


def _validate(path: Path, *, filename: str, max_pixels: int) -> MosaicHeader:
    """Header checks, then a full decode (catches truncated pixel data); messages name the client's file."""
    try:
        if path.stat().st_size == 0:
            raise UnreadableMosaic("the file is empty")
        if sniff_format(path) is None:
            raise UnsupportedMediaType("not an image rcmseg reads (TIFF, PNG, JPEG, BMP or DICOM)")
        return verify_readable(path, max_pixels=max_pixels)
    except RcmSegError as exc:
        exc.args = (str(exc).replace(str(path), filename or "upload"),)
        raise


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=MosaicOut,
    openapi_extra=UPLOAD_BODY,
    responses=error_responses(
        401,
        413,
        415,
        422,
        507,
        also={200: {"model": MosaicOut, "description": "These bytes had been uploaded before."}},
    ),
    summary="Upload a mosaic (multipart field 'file')",
)
async def upload_mosaic(
    request: Request,
    response: Response,
    owner: OwnerDep,
    settings: SettingsDep,
    storage: StorageDep,
    jobs: QueueDep,
) -> MosaicOut:
    """Stream the upload to disk (size limit enforced while it streams, SHA-256 computed on the way), then
    check the header and decode it fully before accepting it. A rejected upload keeps nothing; one the
    data folder has no room for is a 507."""
    partial = storage.new_partial()
    try:
        received = await receive_upload(
            request, partial, max_bytes=settings.max_upload_bytes, min_free_bytes=settings.min_free_bytes
        )
        header = await run_in_threadpool(
            _validate, partial, filename=received.filename, max_pixels=settings.max_pixels
        )
        record, created = await run_in_threadpool(
            storage.store_mosaic,
            owner,
            partial,
            sha256=received.sha256,
            header=header,
            filename=received.filename,
        )
    finally:
        partial.unlink(missing_ok=True)
    if not created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/mosaics/{record.id}"
    return await run_in_threadpool(_out, record, owner, jobs, existing=not created)


@router.get("", response_model=MosaicList, responses=error_responses(401), summary="List your mosaics")
def list_mosaics(owner: OwnerDep, storage: StorageDep, jobs: QueueDep) -> MosaicList:
    return MosaicList(mosaics=[_out(m, owner, jobs) for m in storage.list_mosaics(owner)])


@router.get(
    "/{mosaic_id}", response_model=MosaicOut, responses=error_responses(401, 404), summary="Read a mosaic"
)
def get_mosaic(mosaic_id: str, owner: OwnerDep, storage: StorageDep, jobs: QueueDep) -> MosaicOut:
    record = storage.get_mosaic(owner, mosaic_id)
    if record is None:
        raise NotFound(f"no mosaic {mosaic_id!r}")
    return _out(record, owner, jobs)


@router.delete(
    "/{mosaic_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(401, 404),
    summary="Delete an uploaded mosaic and its pyramid (results computed from it stay until they expire)",
)
def delete_mosaic(mosaic_id: str, owner: OwnerDep, storage: StorageDep) -> Response:
    if not storage.delete_mosaic(owner, mosaic_id):
        raise NotFound(f"no mosaic {mosaic_id!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
