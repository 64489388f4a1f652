"""Coloured tiles against static tiles: p50/p95 of a fixed number of requests from 50 concurrent clients.

The real API (``rcmseg api``, one uvicorn process) on loopback, a private ``redis-server``, and two finished
jobs on one heat pyramid written by the export code (a 12000 x 12000 mosaic at 4x: 3000 x 3000 of heat):
one colours its mask and heatmap tiles on request, the other holds the same tiles as PNG files (results
written before the heat pyramid), served by the same route with the same authentication and job lookup. Every
coloured request asks for another threshold or colormap than the one before it on that tile, and no client
sends ``If-None-Match``, so each one is rendered. Run with ``python -m benchmarks.tile_serving``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyvips
from redis import Redis
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from benchmarks.common import REPO, add_json_option, parser, write_result
from worker.bench import machine_info
from worker.contract import JOB_FUNCTION, MetaKey
from worker.io.export import write_outputs, write_summary
from worker.io.mosaic import Mosaic, MosaicHeader
from worker.io.tiles import heat_tile, mask_tile

OWNER, TOKEN = "bench", "bench-token-0123456789abcdef"
COLORMAPS = ("inferno", "viridis", "magma", "plasma")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[None]:
    out = log.open("ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=out)
    try:
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_up(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def heat_field(side: int) -> np.ndarray:
    """A smooth heat from 0 to 1 with finer ripples on it, like a Gaussian-stitched heatmap."""
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    smooth = (np.sin(xx / 170.0) * np.cos(yy / 130.0) + 1) / 2
    ripples = 0.08 * np.sin(xx / 9.0 + yy / 13.0) * np.cos(yy / 7.0)
    return np.clip(smooth + ripples, 0, 1).astype(np.float32)


def write_heat_result(folder: Path, heat: np.ndarray, downsample: int) -> dict[str, Any]:
    side = heat.shape[1] * downsample
    header = MosaicHeader(width=side, height=side, bands=1, bit_depth=8, format="tiff")
    mosaic = Mosaic(image=pyvips.Image.black(1, 1), header=header, source=folder / "bench.tif")
    export = write_outputs(folder, heat=heat, mosaic=mosaic, downsample=downsample, threshold=0.5)
    summary = {"threshold": 0.5, "processing": {"downsample": downsample, "pixel_size_um": 2.0}}
    write_summary(folder, {**summary, "layers": export.layers})
    return export.timings


def static_copy(rendered: Path, static: Path, level: int) -> None:
    """A result of the old layout whose mask and heatmap tiles at ``level`` are files: the same bytes the
    coloured route gives at the job's threshold and the default colormap."""
    for layer in ("mask", "heatmap"):
        target = static / f"{layer}_files" / str(level)
        target.mkdir(parents=True)
        for tile in (rendered / "heat_files" / str(level)).iterdir():
            grey = tile.read_bytes()
            data = (
                mask_tile(grey, threshold=0.5)
                if layer == "mask"
                else heat_tile(grey, colormap="inferno", transparent_below=0.15)
            )
            (target / tile.name).write_bytes(data)
        shutil.copyfile(rendered / "heat.dzi", static / f"{layer}.dzi")
    shutil.copyfile(rendered / "summary.json", static / "summary.json")


def finished_job(redis: Redis, queue: str, result_key: str) -> str:
    job = Job.create(
        func=JOB_FUNCTION,
        kwargs={},
        connection=redis,
        serializer=JSONSerializer,
        id=uuid.uuid4().hex,
        origin=queue,
        status=JobStatus.FINISHED,
        meta={
            MetaKey.OWNER: OWNER,
            MetaKey.MOSAIC_ID: "0" * 32,
            MetaKey.RESULT_KEY: result_key,
            MetaKey.MODEL: "bench",
            MetaKey.PARAMS: {},
        },
    )
    job.save()
    return str(job.id)


async def measure(base: str, urls: list[str], concurrency: int) -> dict[str, float | int]:
    """Latencies of ``urls`` fetched by ``concurrency`` clients at once, each taking the next URL."""
    latencies: list[float] = []
    retried: list[str] = []
    queue = list(reversed(urls))
    headers = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as client:

        async def one_client() -> None:
            while queue:
                url = queue.pop()
                t0 = time.perf_counter()
                try:
                    response = await client.get(url)
                except (httpx.ReadError, httpx.RemoteProtocolError):
                    # A keep-alive connection the server closed as this request went out: counted, and
                    # timed with its retry.
                    retried.append(url)
                    response = await client.get(url)
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200:
                    raise RuntimeError(f"{url}: {response.status_code} {response.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    ms = sorted(1000 * x for x in latencies)
    return {
        "requests": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
        "requests_per_s": round(len(ms) / wall, 1),
        "retried": len(retried),
    }


def tile_urls(job_id: str, tiles: list[str], count: int, *, coloured: bool) -> list[str]:
    """``count`` tile URLs of both layers over ``tiles``; coloured ones change threshold or colormap."""
    urls = []
    for i in range(count):
        layer = "mask" if i % 2 == 0 else "heatmap"
        url = f"/v1/jobs/{job_id}/dzi/{layer}_files/{tiles[i % len(tiles)]}"
        if coloured:
            round_ = i // len(tiles)
            url += (
                f"?threshold={(round_ % 99 + 1) / 100}"
                if layer == "mask"
                else (
                    f"?colormap={COLORMAPS[round_ % len(COLORMAPS)]}&transparent_below={(round_ % 20) / 100}"
                )
            )
        urls.append(url)
    return urls


def run(
    *, side: int, downsample: int, requests: int, concurrency: int, work: Path, log: Path
) -> dict[str, Any]:
    redis_port, api_port = free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    data = work / "data"
    rendered_key, static_key = uuid.uuid4().hex, uuid.uuid4().hex
    rendered = data / "results" / OWNER / rendered_key
    rendered.mkdir(parents=True)
    export_timings = write_heat_result(rendered, heat_field(side // downsample), downsample)
    level = int(np.ceil(np.log2(side // downsample)))
    static = data / "results" / OWNER / static_key
    static.mkdir(parents=True)
    static_copy(rendered, static, level)
    tiles = sorted(p.name for p in (rendered / "heat_files" / str(level)).iterdir())
    tiles = [f"{level}/{name}" for name in tiles]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMSEG_") and k != "REDIS_URL"}
    env.update(
        REDIS_URL=redis_url,
        RCMSEG_QUEUE=queue,
        RCMSEG_API_TOKENS=f"{OWNER}:{TOKEN}",
        RCMSEG_DATA_DIR=str(data),
        RCMSEG_MODEL_ZOO=str(work / "zoo"),
    )
    (work / "zoo").mkdir()
    redis_server = shutil.which("redis-server") or "redis-server"
    redis_args = [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""]
    with (
        process(redis_args),
        process([sys.executable, "-m", "app.cli", "api", "--port", str(api_port)], env, log),
    ):
        base = f"http://127.0.0.1:{api_port}"
        wait_until_up(f"{base}/healthz")
        redis = Redis.from_url(redis_url)
        rendered_job, static_job = (
            finished_job(redis, queue, rendered_key),
            finished_job(redis, queue, static_key),
        )
        warm = min(200, requests)
        asyncio.run(measure(base, tile_urls(static_job, tiles, warm, coloured=False), concurrency))
        asyncio.run(measure(base, tile_urls(rendered_job, tiles, warm, coloured=True), concurrency))
        static_s = asyncio.run(
            measure(base, tile_urls(static_job, tiles, requests, coloured=False), concurrency)
        )
        coloured_s = asyncio.run(
            measure(base, tile_urls(rendered_job, tiles, requests, coloured=True), concurrency)
        )
        again_s = asyncio.run(
            measure(base, tile_urls(static_job, tiles, requests, coloured=False), concurrency)
        )
    static_p95 = max(static_s["p95_ms"], again_s["p95_ms"])
    return {
        "benchmark": "tile_serving",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "mosaic": f"{side} x {side} at {downsample}x: heat {side // downsample} x {side // downsample}",
        "tiles": f"{len(tiles)} tiles of level {level}, mask and heatmap alternately",
        "concurrency": concurrency,
        "static": static_s,
        "static_again": again_s,
        "coloured": coloured_s,
        "coloured_p95_to_static_p95": round(coloured_s["p95_ms"] / static_p95, 3),
        "coloured_p50_to_static_p50": round(
            coloured_s["p50_ms"] / max(static_s["p50_ms"], again_s["p50_ms"]), 3
        ),
        "export_s": {k: round(v, 4) for k, v in export_timings.items()},
        "note": "static is measured before and after coloured; the ratio takes the worse static p95",
    }


def main() -> int:
    p = parser(__doc__)
    p.add_argument("--side", type=int, default=12000, help="mosaic side at input resolution (px)")
    p.add_argument("--downsample", type=int, default=4)
    p.add_argument("--requests", type=int, default=2000, help="requests per variant")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--api-log", type=Path, default=Path("test-artifacts/tile-serving-api.log"))
    add_json_option(p)
    args = p.parse_args()
    args.api_log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="rcmseg-tiles-") as tmp:
        result = run(
            side=args.side,
            downsample=args.downsample,
            requests=args.requests,
            concurrency=args.concurrency,
            work=Path(tmp),
            log=args.api_log,
        )
    write_result(result, args.json, benchmark="tile-serving")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
