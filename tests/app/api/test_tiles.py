"""Result layers and the mosaic's pyramid through the API in this process, on a real Redis.

The result is a real folder written by ``write_outputs`` under a job recorded as finished in RQ (no network
runs); the mosaic's pyramid is built by the real prepare job, run by an RQ worker in this process. Covers
coloured tiles (heatmap by colormap, mask at any threshold), their validation and caching, regions at a
threshold, the histogram, results written before this layout, and owner isolation.
"""

from __future__ import annotations

import io
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from redis import Redis
from rq import SimpleWorker
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from app.api import create_app
from app.api.services import tiles
from app.settings import Settings, load_settings
from app.storage import Storage
from tests.app.conftest import TOKENS
from worker.contract import JOB_FUNCTION, MetaKey
from worker.engine.device import RunOptions
from worker.io.colormap import rgba_lut
from worker.io.export import write_outputs, write_summary
from worker.io.mosaic import open_mosaic
from worker.io.tiles import MASK_RGBA
from worker.queue.job import WorkerRuntime, configure

ALICE = {"Authorization": f"Bearer {TOKENS['alice']}"}
BOB = {"Authorization": f"Bearer {TOKENS['bob']}"}
W, H, K = 600, 400, 4
THRESHOLD = 0.5


@pytest.fixture
def settings(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.delenv("RCMSEG_API_TOKENS", raising=False)
    return load_settings(
        Settings,
        REDIS_URL=redis_url,
        api_tokens=",".join(f"{o}:{t}" for o, t in TOKENS.items()),
        data_dir=tmp_path / "data",
        model_zoo=tmp_path / "zoo",
        queue=f"test-tiles-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def run_queue(settings: Settings) -> None:
    """Run every queued job (the prepare jobs) in this process, as ``rcmseg worker`` would."""
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    configure(
        WorkerRuntime(
            data_dir=settings.data_dir.resolve(), zoo=settings.model_zoo, device="cpu", options=RunOptions()
        )
    )
    try:
        SimpleWorker([settings.queue], connection=redis, serializer=JSONSerializer).work(burst=True)
    finally:
        configure(None)


def mosaic_png(tmp_path: Path) -> Path:
    yy, xx = np.mgrid[0:H, 0:W]
    pixels = (128 + 60 * np.sin(xx / 40.0) * np.cos(yy / 30.0)).astype(np.uint8)
    Image.fromarray(pixels).save(tmp_path / "mosaic.png")
    return tmp_path / "mosaic.png"


def heat_values() -> np.ndarray:
    """0.1 everywhere, 0.3 in one block, 0.8 in another (rows, columns of the 150 x 100 heatmap)."""
    heat = np.full((H // K, W // K), 0.1, np.float32)
    heat[10:30, 10:40] = 0.3
    heat[50:70, 80:120] = 0.8
    return heat


def finished_job(
    settings: Settings, owner: str, mosaic_id: str, mosaic: Path, *, legacy: bool = False
) -> str:
    """A job recorded as finished in RQ, with a result folder written by the export code."""
    result_key = uuid.uuid4().hex
    folder = Storage(settings.data_dir).results / owner / result_key
    folder.mkdir(parents=True)
    heat = heat_values()
    export = write_outputs(
        folder, heat=heat, mosaic=open_mosaic(mosaic, max_pixels=1 << 30), downsample=K, threshold=THRESHOLD
    )
    summary: dict[str, Any] = {"threshold": THRESHOLD, "processing": {"downsample": K, "pixel_size_um": 2.0}}
    if legacy:  # a result written before the heat pyramid: its layers are plain files
        shutil.rmtree(folder / "heat_files")
        (folder / "heat.dzi").unlink()
        (folder / "heat_histogram.json").unlink()
        for layer in ("mosaic", "heatmap", "mask"):
            (folder / f"{layer}.dzi").write_text(f"<Image Format='png' layer='{layer}'/>")
            (folder / f"{layer}_files" / "0").mkdir(parents=True)
            (folder / f"{layer}_files" / "0" / "0_0.png").write_bytes(b"old " + layer.encode())
    else:
        summary["layers"] = export.layers
    write_summary(folder, summary)
    job = Job.create(
        func=JOB_FUNCTION,
        kwargs={},
        connection=Redis.from_url(settings.redis_url.get_secret_value()),
        serializer=JSONSerializer,
        id=uuid.uuid4().hex,
        origin=settings.queue,
        status=JobStatus.FINISHED,
        meta={
            MetaKey.OWNER: owner,
            MetaKey.MOSAIC_ID: mosaic_id,
            MetaKey.RESULT_KEY: result_key,
            MetaKey.MODEL: "tiny",
            MetaKey.PARAMS: {},
        },
    )
    job.save()
    return str(job.id)


@pytest.fixture
def uploaded(client: TestClient, tmp_path: Path) -> tuple[str, Path]:
    path = mosaic_png(tmp_path)
    with path.open("rb") as fh:
        response = client.post("/v1/mosaics", files={"file": ("m.png", fh)}, headers=ALICE)
    assert response.status_code == 201, response.text
    return str(response.json()["id"]), path


def rgba(response: Any) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)).convert("RGBA"))


def test_the_mosaic_pyramid_is_prepared_once_in_the_background(
    client: TestClient, settings: Settings, uploaded: tuple[str, Path]
) -> None:
    mosaic_id, _ = uploaded
    body = client.get(f"/v1/mosaics/{mosaic_id}", headers=ALICE).json()
    assert body["pyramid"] == "preparing" and body["dzi"] == f"/v1/mosaics/{mosaic_id}/dzi/mosaic.dzi"
    assert client.get(body["dzi"], headers=ALICE).status_code == 404
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    queued = [j for j in redis.lrange(f"rq:queue:{settings.queue}", 0, -1)]
    assert len(queued) == 1  # the upload and every read since queued one prepare job between them
    run_queue(settings)
    body = client.get(f"/v1/mosaics/{mosaic_id}", headers=ALICE).json()
    assert body["pyramid"] == "ready"
    dzi = client.get(body["dzi"], headers=ALICE)
    assert dzi.status_code == 200 and 'Width="600"' in dzi.text and 'Format="jpeg"' in dzi.text
    tile = client.get(f"/v1/mosaics/{mosaic_id}/dzi/mosaic_files/10/0_0.jpeg", headers=ALICE)
    assert tile.status_code == 200 and tile.headers["content-type"] == "image/jpeg"
    assert "immutable" in tile.headers["cache-control"]
    assert client.get(body["dzi"], headers=BOB).status_code == 404
    assert (
        client.get(
            f"/v1/mosaics/{mosaic_id}/dzi/mosaic_files/10/..%2F..%2Fmosaic.dzi", headers=ALICE
        ).status_code
        == 404
    )
    # Deleting the mosaic deletes its pyramid.
    pyramid = Storage(settings.data_dir).pyramid_dir("alice", mosaic_id)
    assert pyramid is not None and pyramid.is_dir()
    assert client.delete(f"/v1/mosaics/{mosaic_id}", headers=ALICE).status_code == 204
    assert not pyramid.exists() and client.get(body["dzi"], headers=ALICE).status_code == 404


def test_heatmap_and_mask_tiles_are_coloured_as_the_url_says(
    client: TestClient, settings: Settings, uploaded: tuple[str, Path]
) -> None:
    mosaic_id, path = uploaded
    run_queue(settings)
    job_id = finished_job(settings, "alice", mosaic_id, path)
    result = client.get(f"/v1/jobs/{job_id}", headers=ALICE).json()["result"]
    assert result["histogram"].endswith("/files/heat_histogram.json")
    layers = result["layers"]
    # The mosaic layer of the job is the mosaic's pyramid; heatmap and mask share the heat's descriptor.
    assert 'Width="600"' in client.get(layers["mosaic"], headers=ALICE).text
    for layer in ("heatmap", "mask"):
        dzi = client.get(layers[layer] + "?threshold=0.2", headers=ALICE)
        assert 'Width="150"' in dzi.text and 'Height="100"' in dzi.text and 'Format="png"' in dzi.text
    base = f"/v1/jobs/{job_id}/dzi"
    grey = np.rint(heat_values() * 255).astype(np.uint8)
    heat = rgba(client.get(f"{base}/heatmap_files/8/0_0.png", headers=ALICE))
    np.testing.assert_array_equal(heat, rgba_lut("inferno", 0.15)[grey])
    viridis = rgba(
        client.get(f"{base}/heatmap_files/8/0_0.png?colormap=viridis&transparent_below=0", headers=ALICE)
    )
    np.testing.assert_array_equal(viridis, rgba_lut("viridis", 0.0)[grey])

    def mask(query: str) -> np.ndarray:
        return rgba(client.get(f"{base}/mask_files/8/0_0.png{query}", headers=ALICE))[..., 3] > 0

    np.testing.assert_array_equal(mask(""), heat_values() >= THRESHOLD)  # the job's own threshold
    np.testing.assert_array_equal(mask("?threshold=0.25"), heat_values() >= 0.25)
    np.testing.assert_array_equal(mask("?threshold=0.9"), np.zeros_like(grey, bool))
    inside = rgba(client.get(f"{base}/mask_files/8/0_0.png?threshold=0.25", headers=ALICE))[60, 100]
    assert tuple(inside) == MASK_RGBA


def test_coloured_tiles_are_cached_by_url(
    client: TestClient, settings: Settings, uploaded: tuple[str, Path]
) -> None:
    mosaic_id, path = uploaded
    job_id = finished_job(settings, "alice", mosaic_id, path)
    url = f"/v1/jobs/{job_id}/dzi/mask_files/8/0_0.png?threshold=0.3"
    first = client.get(url, headers=ALICE)
    etag = first.headers["etag"]
    assert etag.startswith('"') and "immutable" in first.headers["cache-control"]
    assert client.get(url, headers=ALICE).headers["etag"] == etag
    again = client.get(url, headers={**ALICE, "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other = client.get(url.replace("0.3", "0.4"), headers=ALICE).headers["etag"]
    heat = client.get(url.replace("mask_files", "heatmap_files"), headers=ALICE).headers["etag"]
    assert len({etag, other, heat}) == 3


@pytest.mark.parametrize(
    ("query", "status", "field"),
    [
        ("mask_files/8/0_0.png?threshold=1.5", 422, "threshold"),
        ("mask_files/8/0_0.png?threshold=-0.1", 422, "threshold"),
        ("mask_files/8/0_0.png?threshold=abc", 422, "threshold"),
        ("heatmap_files/8/0_0.png?colormap=jet", 422, "colormap"),
        ("heatmap_files/8/0_0.png?transparent_below=2", 422, "transparent_below"),
        ("heatmap_files/9/0_0.png", 404, "level"),
        ("heatmap_files/8/1_0.png", 404, "col"),
        ("mask_files/8/0_1.png", 404, "row"),
    ],
)
def test_bad_tile_requests_name_the_parameter(
    client: TestClient, settings: Settings, uploaded: tuple[str, Path], query: str, status: int, field: str
) -> None:
    mosaic_id, path = uploaded
    job_id = finished_job(settings, "alice", mosaic_id, path)
    response = client.get(f"/v1/jobs/{job_id}/dzi/{query}", headers=ALICE)
    assert response.status_code == status, response.text
    body = response.json()
    assert body.get("field") == field and field in body["message"]


def test_tiles_and_regions_are_the_owners_only(
    client: TestClient, settings: Settings, uploaded: tuple[str, Path]
) -> None:
    mosaic_id, path = uploaded
    job_id = finished_job(settings, "alice", mosaic_id, path)
    for url in (
        f"/v1/jobs/{job_id}/dzi/mask_files/8/0_0.png?threshold=0.3",
        f"/v1/jobs/{job_id}/dzi/heatmap.dzi",
        f"/v1/jobs/{job_id}/regions.geojson?threshold=0.3",
        f"/v1/jobs/{job_id}/files/heat_histogram.json",
    ):
        assert client.get(url, headers=ALICE).status_code == 200, url
        assert client.get(url, headers=BOB).status_code == 404, url
        assert client.get(url).status_code == 401, url
    for url in (
        f"/v1/jobs/{job_id}/dzi/heat_files/8/0_0.png",
        f"/v1/jobs/{job_id}/dzi/mask_files/8/..%2F..%2F..%2Fsummary.json",
        f"/v1/jobs/{job_id}/dzi/mask_files/8/0_0.jpg",
    ):
        assert client.get(url, headers=ALICE).status_code == 404, url


def test_regions_at_a_threshold_are_computed_once_and_kept(
    client: TestClient, settings: Settings, uploaded: tuple[str, Path]
) -> None:
    mosaic_id, path = uploaded
    job_id = finished_job(settings, "alice", mosaic_id, path)
    own = client.get(f"/v1/jobs/{job_id}/regions.geojson", headers=ALICE)
    assert own.headers["content-type"] == "application/geo+json"
    assert own.json() == client.get(f"/v1/jobs/{job_id}/files/regions.geojson", headers=ALICE).json()
    assert len(own.json()["features"]) == 1
    lower = client.get(f"/v1/jobs/{job_id}/regions.geojson?threshold=0.25", headers=ALICE).json()
    assert len(lower["features"]) == 2
    xs = [p[0] for f in lower["features"] for p in f["geometry"]["coordinates"][0]]
    # In full-resolution mosaic pixels: columns 10 to 119 of the heat, 4 mosaic pixels each.
    assert min(xs) == pytest.approx(10 * K, abs=K / 2) and max(xs) == pytest.approx(120 * K, abs=K / 2)
    cached = list((Storage(settings.data_dir).results / "alice").glob("*/cache/regions-0.25.geojson"))
    assert len(cached) == 1
    bad = client.get(f"/v1/jobs/{job_id}/regions.geojson?threshold=2", headers=ALICE)
    assert bad.status_code == 422 and bad.json()["field"] == "threshold"


def test_regions_thresholds_are_rounded_and_their_cache_is_bounded(
    client: TestClient, settings: Settings, uploaded: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tiles, "REGIONS_CACHE_FILES", 5)
    mosaic_id, path = uploaded
    job_id = finished_job(settings, "alice", mosaic_id, path)
    url = f"/v1/jobs/{job_id}/regions.geojson"
    first = client.get(f"{url}?threshold=0.25", headers=ALICE).json()
    (cache,) = list((Storage(settings.data_dir).results / "alice").glob("*/cache"))
    for i in range(1, 201):  # 200 thresholds 1e-9 apart: one computation, one file
        near = client.get(f"{url}?threshold={0.25 + i * 1e-9!r}", headers=ALICE)
        assert near.status_code == 200 and near.json() == first
    assert [p.name for p in cache.iterdir()] == ["regions-0.25.geojson"]
    assert (
        client.get(f"{url}?threshold=0.50000001", headers=ALICE).json()
        == client.get(url, headers=ALICE).json()
    )
    assert len(list(cache.iterdir())) == 1  # rounded to the job's own threshold: its file, no new one
    counts = []
    for i in range(12):
        assert client.get(f"{url}?threshold={0.3 + i * 0.01:.2f}", headers=ALICE).status_code == 200
        counts.append(len(list(cache.glob("regions-*.geojson"))))
    assert max(counts) == 5 and counts[-1] == 5  # never past the limit
    assert (cache / "regions-0.41.geojson").is_file()  # the last one asked for is kept
    assert not (cache / "regions-0.25.geojson").exists()  # the least recently used went first
    again = client.get(f"{url}?threshold=0.25", headers=ALICE)
    assert again.status_code == 200 and again.json() == first  # computed again when asked again
    assert [p for p in cache.iterdir() if not p.name.startswith("regions-")] == []


def test_the_histogram_gives_the_area_at_any_threshold(
    client: TestClient, settings: Settings, uploaded: tuple[str, Path]
) -> None:
    mosaic_id, path = uploaded
    job_id = finished_job(settings, "alice", mosaic_id, path)
    histogram = client.get(f"/v1/jobs/{job_id}/files/heat_histogram.json", headers=ALICE).json()
    counts = histogram["counts"]
    assert sum(counts[250:]) == 20 * 30 + 20 * 40 and sum(counts[500:]) == 20 * 40
    assert json.dumps(histogram).startswith('{"bins": 1000')


def test_results_written_before_the_heat_pyramid_are_served_as_they_were(
    client: TestClient, settings: Settings, uploaded: tuple[str, Path]
) -> None:
    mosaic_id, path = uploaded
    job_id = finished_job(settings, "alice", mosaic_id, path, legacy=True)
    result = client.get(f"/v1/jobs/{job_id}", headers=ALICE).json()["result"]
    assert result["histogram"] is None and result["regions"] is None
    for layer in ("mosaic", "heatmap", "mask"):
        assert f"layer='{layer}'" in client.get(result["layers"][layer], headers=ALICE).text
        tile = client.get(f"/v1/jobs/{job_id}/dzi/{layer}_files/0/0_0.png?threshold=0.2", headers=ALICE)
        assert tile.content == b"old " + layer.encode()


def test_a_mosaic_without_a_pyramid_gets_one_when_a_job_asks_for_it(
    client: TestClient, settings: Settings, uploaded: tuple[str, Path]
) -> None:
    """As for a mosaic uploaded before pyramids were per mosaic: no pyramid, no prepare job queued."""
    mosaic_id, path = uploaded
    redis = Redis.from_url(settings.redis_url.get_secret_value())
    redis.delete(f"rq:queue:{settings.queue}", f"rcmseg:{settings.queue}:prepare:alice:{mosaic_id}")
    job_id = finished_job(settings, "alice", mosaic_id, path)
    dzi = f"/v1/jobs/{job_id}/dzi/mosaic.dzi"
    for _ in range(2):  # asked twice, queued once
        missing = client.get(dzi, headers=ALICE)
        assert missing.status_code == 404 and "being prepared" in missing.json()["message"]
    assert redis.llen(f"rq:queue:{settings.queue}") == 1
    run_queue(settings)
    assert 'Width="600"' in client.get(dzi, headers=ALICE).text
    assert client.get(f"/v1/jobs/{job_id}/dzi/mosaic_files/10/0_0.jpeg", headers=ALICE).status_code == 200
