"""Files served as they lie on disk. A result or pyramid file never changes once written (a new result has a
new key), so clients and proxies may keep it for a year; ``Vary: Authorization`` keeps one owner's copy from
another."""

from __future__ import annotations

from pathlib import Path

from fastapi.responses import FileResponse

from app.api.errors import NotFound

IMMUTABLE_HEADERS = {"Cache-Control": "private, max-age=31536000, immutable", "Vary": "Authorization"}


def immutable_file(path: Path, media_type: str, *, missing: str) -> FileResponse:
    """The file at ``path``, or a 404 saying ``missing`` where there is none."""
    if not path.is_file():
        raise NotFound(missing)
    return FileResponse(path, media_type=media_type, headers=IMMUTABLE_HEADERS)
