"""``RcmsegClient``: the HTTP API of a running rcmseg service, one method per thing a script does.

    with RcmsegClient("http://127.0.0.1:8000", token) as client:
        mosaic = client.upload_mosaic(Path("lesion.tif"))
        job = client.wait_for_job(client.submit_job(mosaic.id).id)
        client.download_result(job.id, Path("out/lesion"))

Every refusal or failure of the service raises ``ServiceError`` with the service's own code and message.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from app.client.errors import UNREACHABLE, ServiceError
from app.client.responses import Job, Model, Mosaic
from worker.contract import HEATMAP_TIFF, REGIONS_GEOJSON, SUMMARY_FILE

RESULT_DOWNLOADS = (SUMMARY_FILE, REGIONS_GEOJSON, HEATMAP_TIFF)
"""What ``download_result`` fetches by default: the summary, the regions GeoJSON and the heatmap TIFF."""

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
CHUNK = 1 << 20


class _CountingReader:
    """A binary file that reports how far it has been read (the upload's progress)."""

    def __init__(self, fh: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self._fh = fh
        self._on_bytes = on_bytes

    def read(self, size: int = -1) -> bytes:
        data = self._fh.read(size)
        self._on_bytes(self._fh.tell())
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def tell(self) -> int:
        return self._fh.tell()

    def fileno(self) -> int:
        return self._fh.fileno()


def _error_of(response: httpx.Response) -> ServiceError:
    """The service's ``{code, message}`` of an error answer (or the status line, from anything else)."""
    code, message = f"http_{response.status_code}", response.reason_phrase or "error"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code, message = str(body.get("code") or code), body["message"]
    retry = response.headers.get("Retry-After")
    return ServiceError(
        code,
        message,
        response.status_code,
        retry_after_s=float(retry) if retry and retry.isdigit() else None,
    )


class RcmsegClient:
    """A client of one service, signed in with one bearer token. Use it as a context manager (or call
    ``close``) so its connections are closed."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not token.strip():
            raise ValueError("the token is empty")
        self.server = server.rstrip("/")
        self._http = httpx.Client(
            base_url=self.server,
            headers={"Authorization": f"Bearer {token.strip()}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> RcmsegClient:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # -- requests ------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceError(UNREACHABLE, f"cannot reach {self.server}: {exc}", None) from None
        if response.is_error:
            raise _error_of(response)
        return response

    def list_models(self) -> list[Model]:
        """The models of the service's zoo (``default`` marks the one a job without ``model`` gets)."""
        return [Model.from_json(m) for m in self._request("GET", "/v1/models").json()["models"]]

    def list_mosaics(self) -> list[Mosaic]:
        """The mosaics this token's owner has uploaded (and the service still keeps)."""
        return [Mosaic.from_json(m) for m in self._request("GET", "/v1/mosaics").json()["mosaics"]]

    def upload_mosaic(
        self, path: Path, *, on_bytes: Callable[[int], None] | None = None, filename: str | None = None
    ) -> Mosaic:
        """Upload one mosaic file; ``on_bytes(sent)`` is called as it goes. The same bytes uploaded again
        give the same mosaic, with ``existing`` true. An unreadable file is refused (``ServiceError``)."""
        with path.open("rb") as fh:
            body: IO[bytes] | _CountingReader = fh if on_bytes is None else _CountingReader(fh, on_bytes)
            files = {"file": (filename or path.name, body, "application/octet-stream")}
            response = self._request("POST", "/v1/mosaics", files=files)  # type: ignore[dict-item]
        return Mosaic.from_json(response.json())

    def submit_job(
        self,
        mosaic_id: str,
        *,
        model: str | None = None,
        cam: str | None = None,
        step: int | None = None,
        sigma: float | str | None = None,
        threshold: float | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Job:
        """Segment an uploaded mosaic. Options left ``None`` are not sent, so the service applies the model
        card's defaults; ``sigma`` is in processing pixels or ``"none"``; ``extra`` adds other fields of
        ``POST /v1/jobs``. An identical earlier job comes back with ``reused`` true."""
        body: dict[str, Any] = {"mosaic_id": mosaic_id}
        given = {"model": model, "cam": cam, "step": step, "sigma": sigma, "threshold": threshold}
        body.update({k: v for k, v in given.items() if v is not None})
        body.update(extra or {})
        return Job.from_json(self._request("POST", "/v1/jobs", json=body).json())

    def get_job(self, job_id: str) -> Job:
        return Job.from_json(self._request("GET", f"/v1/jobs/{job_id}").json())

    def cancel_job(self, job_id: str) -> Job:
        return Job.from_json(self._request("DELETE", f"/v1/jobs/{job_id}").json())

    def wait_for_job(
        self,
        job_id: str,
        *,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
        patience_s: float = 120.0,
        on_update: Callable[[Job], None] | None = None,
    ) -> Job:
        """Poll until the job has ended (finished, failed or canceled) and return it; ``on_update`` sees
        every answer. A service or queue that is briefly away is waited for, up to ``patience_s``
        at a time; ``timeout_s`` bounds the whole wait (``TimeoutError``)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            job = self.poll_job(job_id, patience_s=patience_s)
            if on_update is not None:
                on_update(job)
            if job.ended:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} has not ended after {timeout_s:g} s ({job.status})")
            time.sleep(poll_s)

    def poll_job(self, job_id: str, *, patience_s: float = 120.0) -> Job:
        """``get_job``, trying again while the error is transient (503 while Redis restarts, a refused
        connection while the API restarts), for up to ``patience_s``."""
        give_up = time.monotonic() + patience_s
        while True:
            try:
                return self.get_job(job_id)
            except ServiceError as exc:
                if not exc.transient or time.monotonic() >= give_up:
                    raise
                time.sleep(min(exc.retry_after_s or 2.0, 10.0))

    def download_result(
        self, job_id: str, folder: Path, *, files: Iterable[str] = RESULT_DOWNLOADS
    ) -> list[Path]:
        """Write the named files of a finished job into ``folder`` (created if needed) and return their
        paths. Each file is streamed to a temporary name and renamed, so a file is whole or absent."""
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for name in files:
            target = folder / name
            partial = folder / f".{name}.part"
            try:
                with self._http.stream("GET", f"/v1/jobs/{job_id}/files/{name}") as response:
                    if response.is_error:
                        response.read()
                        raise _error_of(response)
                    with partial.open("wb") as fh:
                        for block in response.iter_bytes(CHUNK):
                            fh.write(block)
            except httpx.TransportError as exc:
                partial.unlink(missing_ok=True)
                raise ServiceError(UNREACHABLE, f"cannot reach {self.server}: {exc}", None) from None
            except BaseException:
                partial.unlink(missing_ok=True)
                raise
            os.replace(partial, target)
            written.append(target)
        return written
