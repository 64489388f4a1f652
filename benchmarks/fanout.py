"""What sharing one mosaic out over workers costs and gains: one job against ``parallel: 2``, same run.

    .venv/bin/python -m benchmarks.fanout [--model models/zoo/phantom-b2] [--size 1000] \
        [--cases cam scorecam] [--json benchmarks/results/] [--quick]

A private ``redis-server`` and real ``rcmseg worker`` processes of one torch thread each, the models loaded
before anything is timed. For each case (CAM at step 25; ScoreCAM top-k 16 at step 100) on a ``--size``
square mosaic at the model's pixel size (so the processing image is ``--size`` px a side), in one run:

- ``plain``: the job on one worker;
- ``parallel_one_worker``: ``parallel: 2`` on the same single worker (the overhead of splitting: two reads of
  the mosaic, the band files, the merge), target at most 1.1 x ``plain``;
- ``parallel_two_workers``: ``parallel: 2`` with a second worker started (the speed-up), target at least
  1.8 x over ``plain``.

Each time is from enqueue to the result's summary; the summary's per-band seconds and the merge's export
give the projection for N workers in docs/engine.md. A machine with fewer free cores than workers cannot
show the speed-up: the JSON records the cores and the load average.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from redis import Redis
from rq import Queue
from rq.job import Job
from rq.serializers import JSONSerializer

from app.api.services.fanout import enqueue_parts
from app.settings import WorkerSettings
from benchmarks import common
from worker.contract import JOB_FUNCTION, SUMMARY_FILE, SegmentJobKwargs

CASES = {
    "cam": {"step": 25},
    "scorecam": {"step": 100, "cam": "scorecam", "scorecam_top_k": 16},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A private Redis, a data folder with one mosaic and a zoo, and worker processes on demand."""

    def __init__(self, root: Path, model: Path, size: int) -> None:
        self.root = root
        self.port = _free_port()
        self.redis_proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--dir",
                str(root),
            ],
            stdout=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis = Redis.from_url(self.url)
        for _ in range(100):
            try:
                self.redis.ping()
                break
            except Exception:  # not up yet
                time.sleep(0.1)
        self.queue = Queue(f"bench-{uuid.uuid4().hex[:6]}", connection=self.redis, serializer=JSONSerializer)
        (root / "data" / "uploads").mkdir(parents=True)
        (root / "zoo").mkdir()
        (root / "zoo" / "m").symlink_to(model.resolve(), target_is_directory=True)
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(1, 255, (size, size), dtype=np.uint8)).save(root / "data/uploads/m.png")
        self.workers: list[subprocess.Popen[bytes]] = []
        self.settings = WorkerSettings(
            redis_url=self.url, data_dir=root / "data", model_zoo=root / "zoo", job_retries=0
        )  # type: ignore[call-arg]

    def start_worker(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCMSEG_")}
        env.update(
            REDIS_URL=self.url,
            RCMSEG_QUEUE=self.queue.name,
            RCMSEG_DATA_DIR=str(self.root / "data"),
            RCMSEG_MODEL_ZOO=str(self.root / "zoo"),
            RCMSEG_DEVICE="cpu",
            RCMSEG_JOB_HEARTBEAT_S="60",
        )
        log = (self.root / f"worker-{len(self.workers)}.log").open("ab")
        self.workers.append(
            subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", "--threads", "1", "--models", "m"],
                cwd=common.REPO,
                env=env,
                stdout=log,
                stderr=log,
            )
        )
        while self.redis.scard(f"rq:workers:{self.queue.name}") < len(self.workers):
            time.sleep(0.2)

    def run(self, params: dict[str, Any], parallel: int) -> tuple[float, dict[str, Any]]:
        """Seconds from enqueue to the result's summary, and the summary."""
        job_id = uuid.uuid4().hex
        kwargs: SegmentJobKwargs = {
            "source": "uploads/m.png",
            "out_dir": f"results/{job_id}",
            "model": "m",
            "params": {"pixel_size_um": 2.0, **params},
            "cancel_key": f"bench:cancel:{job_id}",
        }
        t0 = time.perf_counter()
        if parallel > 1:
            job = enqueue_parts(
                self.queue, self.settings, job_id=job_id, kwargs=kwargs, meta={}, parallel=parallel,
                description="bench",
            )  # fmt: skip
        else:
            job = self.queue.enqueue_call(func=JOB_FUNCTION, kwargs=dict(kwargs), job_id=job_id, timeout=3600)
        summary = self.root / "data" / kwargs["out_dir"] / SUMMARY_FILE
        while not summary.is_file():
            status = Job.fetch(job.id, connection=self.redis, serializer=JSONSerializer).get_status()
            if status == "failed":
                logs = "".join(p.read_text()[-2000:] for p in sorted(self.root.glob("worker-*.log")))
                raise RuntimeError(f"job {job.id} failed:\n{logs}")
            time.sleep(0.1)
        return time.perf_counter() - t0, json.loads(summary.read_text())

    def stop(self) -> None:
        for proc in [*self.workers, self.redis_proc]:
            proc.terminate()
        for proc in [*self.workers, self.redis_proc]:
            proc.wait(timeout=30)


def _figures(seconds: float, summary: dict[str, Any]) -> dict[str, Any]:
    timings = summary["timings_s"]
    out: dict[str, Any] = {
        "wall_s": round(seconds, 2),
        "windows": summary["windows"]["computed"],
        "read_s": timings.get("read_downsample"),
        "export_s": timings.get("export_total"),
    }
    if summary.get("parallel"):
        out["band_wall_s"] = [b["wall_s"] for b in summary["parallel"]["bands"]]
    return out


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--model", type=Path, default=common.REPO / "models" / "zoo" / "phantom-b2")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--quick", action="store_true", help="a 300 px mosaic, for checking the benchmark")
    common.add_json_option(parser)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        parser.error("redis-server is not installed")
    size = 300 if args.quick else args.size
    window = int(json.loads((args.model / "card.json").read_text())["window"])
    root = Path(tempfile.mkdtemp(prefix="rcmseg-fanout-"))
    cluster = Cluster(root, args.model, size)
    result: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "load_average_at_start": os.getloadavg()},
        "mosaic": f"{size} x {size} at the model's pixel size",
        "worker_threads": 1,
        "cases": {},
    }
    try:
        cluster.start_worker()
        for name in args.cases:
            params = {**CASES[name], "step": 40} if args.quick else CASES[name]
            cluster.run({**params, "step": window}, 1)  # warm-up: first batches and reads, few windows
            plain = _figures(*cluster.run(params, 1))
            split = _figures(*cluster.run(params, 2))
            result["cases"][name] = {"params": params, "plain": plain, "parallel_one_worker": split}
        cluster.start_worker()
        for name in args.cases:
            case = result["cases"][name]
            two = _figures(*cluster.run(case["params"], 2))
            case["parallel_two_workers"] = two
            case["overhead"] = round(case["parallel_one_worker"]["wall_s"] / case["plain"]["wall_s"], 3)
            case["speedup"] = round(case["plain"]["wall_s"] / two["wall_s"], 3)
        result["machine"]["load_average_at_end"] = os.getloadavg()
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    common.write_result(result, args.json, benchmark="fanout")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
