"""A full data folder, for real: the API in this process with its data folder on a small tmpfs.

An upload whose announced length does not fit is refused before a byte is written; one that fills the disk
while it streams (no length announced) is refused when the write fails; both are a 507 naming the data
folder and leave nothing behind. Regions at a new threshold on a full disk are a 507 too, and /readyz
reports the low space.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from app.api import create_app
from app.settings import Settings, load_settings
from tests.app.api.test_tiles import ALICE, finished_job, mosaic_png
from tests.app.conftest import TOKENS

MIB = 1024**2
BOUNDARY = "rcmsegdisktest"


def make_settings(redis_url: str, data_dir: Path, **values: object) -> Settings:
    return load_settings(
        Settings,
        REDIS_URL=redis_url,
        api_tokens=",".join(f"{o}:{t}" for o, t in TOKENS.items()),
        data_dir=data_dir,
        model_zoo=data_dir.parent / "zoo",
        queue=f"test-disk-{uuid.uuid4().hex[:8]}",
        **values,
    )


@pytest.fixture
def disk(small_disk: Callable[[int], Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("RCMSEG_API_TOKENS", raising=False)
    return small_disk(16 * MIB) / "data"


def noise_png(path: Path, size: int) -> Path:
    """A PNG that does not compress (about ``size * size`` bytes)."""
    pixels = np.random.default_rng(1).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path, compress_level=0)
    return path


def multipart(payload: bytes, filename: str = "big.png") -> tuple[bytes, bytes, bytes]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head, payload, f"\r\n--{BOUNDARY}--\r\n".encode()


def left_behind(data_dir: Path) -> list[Path]:
    """Files an upload may have written: partial uploads and mosaic folders."""
    return [p for p in [*(data_dir / "tmp").iterdir(), *(data_dir / "uploads").rglob("*")] if p.is_file()]


@pytest.fixture
def client(redis_url: str, disk: Path) -> Iterator[TestClient]:
    settings = make_settings(redis_url, disk, min_free_bytes=4 * MIB, max_upload_bytes=64 * MIB)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def test_an_upload_that_does_not_fit_is_refused_before_it_is_written(client: TestClient, disk: Path) -> None:
    head, payload, tail = multipart(b"\x89PNG\r\n\x1a\n" + bytes(14 * MIB))
    response = client.post(
        "/v1/mosaics",
        content=head + payload + tail,
        headers={**ALICE, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    assert response.status_code == 507, response.text
    error = response.json()
    assert error["code"] == "insufficient_storage"
    assert error["message"].startswith("not enough space in the data folder for this upload")
    assert str(disk) not in error["message"]
    assert left_behind(disk) == []


def test_an_upload_that_fills_the_disk_while_it_streams_is_refused_and_deleted(
    redis_url: str, disk: Path, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, disk, min_free_bytes=0, max_upload_bytes=64 * MIB)
    head, payload, tail = multipart(b"\x89PNG\r\n\x1a\n" + bytes(24 * MIB))

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size is known only at the end
        yield head
        for start in range(0, len(payload), MIB):
            yield payload[start : start + MIB]
        yield tail

    with TestClient(create_app(settings)) as client:
        response = client.post(
            "/v1/mosaics",
            content=chunks(),
            headers={**ALICE, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        assert response.status_code == 507, response.text
        assert response.json()["message"].startswith("not enough space in the data folder")
        assert left_behind(disk) == []
        # The disk is usable again at once: a small upload goes through.
        with noise_png(tmp_path / "small.png", 256).open("rb") as fh:
            small = client.post("/v1/mosaics", files={"file": ("small.png", fh)}, headers=ALICE)
        assert small.status_code == 201, small.text


def test_a_full_disk_is_a_507_under_any_route_and_readyz_reports_it(
    client: TestClient, disk: Path, tmp_path: Path
) -> None:
    with mosaic_png(tmp_path).open("rb") as fh:
        uploaded = client.post("/v1/mosaics", files={"file": ("m.png", fh)}, headers=ALICE)
    assert uploaded.status_code == 201, uploaded.text
    settings: Settings = client.app.state.settings  # type: ignore[attr-defined]
    job_id = finished_job(settings, "alice", uploaded.json()["id"], mosaic_png(tmp_path))
    before = client.get("/readyz").json()
    assert before["disk"] is True and not any("disk" in r for r in before["reasons"])
    filler = disk / "filler.bin"
    with filler.open("wb") as fh, pytest.raises(OSError):
        while True:
            fh.write(bytes(MIB))  # until the disk is full
    regions = client.get(f"/v1/jobs/{job_id}/regions.geojson?threshold=0.2", headers=ALICE)
    assert regions.status_code == 507, regions.text
    assert regions.json()["message"].startswith("not enough space in the data folder")
    cache = [p for p in disk.rglob("cache/*") if p.is_file()]
    assert cache == []  # nothing half-written
    ready = client.get("/readyz")
    assert ready.status_code == 503
    body = ready.json()
    assert body["disk"] is False and any(r.startswith("low disk space") for r in body["reasons"])
    filler.unlink()
    assert client.get("/readyz").json()["disk"] is True
    assert client.get(f"/v1/jobs/{job_id}/regions.geojson?threshold=0.2", headers=ALICE).status_code == 200
