"""The service under test, for real: the API under uvicorn and workers as subprocesses, on the session's
Redis, with the tiny model in a private zoo and a private data folder."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, free_port

TOKENS = {"alice": "alice-token-0123456789abcdef", "bob": "bob-token-0123456789abcdef00"}
START_TIMEOUT_S = 120.0


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll until ``predicate`` returns something truthy (and return it); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def texture_png(path: Path, size: int, *, seed: int = 0) -> Path:
    """A non-blank 8-bit grey PNG (blank windows would be skipped by the engine)."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(1, 255, (size, size), dtype=np.uint8)).save(path)
    return path


class Service:
    """API and worker processes of one test module; each can be killed and started again."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env = env
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        self.tag = uuid.uuid4().hex[:8]

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", *args], cwd=REPO, env=self.env, stdout=log, stderr=log
        )

    def start_api(self) -> None:
        self.api = self._spawn("api", "api", "--port", str(self.port))
        wait_for(self._api_up, timeout=START_TIMEOUT_S, what="the API to answer /healthz")

    def _api_up(self) -> bool:
        if self.api is not None and self.api.poll() is not None:
            pytest.fail(f"the API exited with {self.api.returncode}; see {self.logs}/api.log")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def kill_api(self) -> None:
        assert self.api is not None
        self.api.send_signal(signal.SIGKILL)
        self.api.wait(timeout=10)

    def start_worker(self, name: str) -> str:
        """Start a worker; its RQ name carries a per-service suffix, since test modules share one Redis
        and a SIGKILLed worker's registration outlives it. Returns that name."""
        full = f"{name}-{self.tag}"
        self.workers[full] = self._spawn(full, "worker", "--name", full, "--threads", "1")
        return full

    def kill_worker(self, name: str) -> None:
        proc = self.workers.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def wait_workers(self, n: int) -> None:
        def ready() -> bool:
            for name, proc in self.workers.items():
                if proc.poll() is not None:
                    pytest.fail(f"worker {name} exited with {proc.returncode}; see {self.logs}/{name}.log")
            try:
                body = httpx.get(f"{self.url}/readyz", timeout=30).json()
            except httpx.HTTPError:  # a loaded machine: ask again
                return False
            return bool(body["workers"] >= n)

        wait_for(ready, timeout=START_TIMEOUT_S, what=f"{n} live workers", interval=0.5)

    def client(self, owner: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {TOKENS[owner]}"} if owner else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> None:
        procs = [p for p in [self.api, *self.workers.values()] if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def service_env(
    redis_url: str, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Settings of a private service: its own queue, data folder and zoo (the tiny model as ``tiny``)."""
    root = tmp_path_factory.mktemp("service")
    zoo = root / "zoo"
    zoo.mkdir()
    (zoo / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMSEG_") and k != "REDIS_URL"}
    env.update(
        PYTHONUNBUFFERED="1",
        REDIS_URL=redis_url,
        RCMSEG_QUEUE=f"test-{uuid.uuid4().hex[:8]}",
        RCMSEG_API_TOKENS=",".join(f"{owner}:{token}" for owner, token in TOKENS.items()),
        RCMSEG_DATA_DIR=str(root / "data"),
        RCMSEG_MODEL_ZOO=str(zoo),
        RCMSEG_DEFAULT_MODEL="tiny",
        RCMSEG_DEVICE="cpu",
        RCMSEG_BATCH_SIZE="32",
        RCMSEG_MAX_UPLOAD_BYTES=str(4 * 1024**2),
        RCMSEG_MAX_PIXELS=str(4096 * 4096),
        RCMSEG_JOB_HEARTBEAT_S="5",
        RCMSEG_JOB_RETRIES="1",
        RCMSEG_SWEEP_INTERVAL_S="1",
    )
    return env


@pytest.fixture(scope="module")
def service(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The API and two workers (``w1``, ``w2``), ready."""
    with running_service(service_env, tmp_path_factory.mktemp("logs"), workers=2) as svc:
        yield svc


@contextlib.contextmanager
def running_service(env: dict[str, str], logs: Path, *, workers: int = 1) -> Iterator[Service]:
    """The API and ``workers`` workers (``w1``, ``w2``, ...), ready; stopped on exit."""
    svc = Service(env, logs)
    try:
        for n in range(1, workers + 1):
            svc.start_worker(f"w{n}")
        svc.start_api()
        svc.wait_workers(workers)
        yield svc
    finally:
        svc.stop()


def upload_id(client: httpx.Client, path: Path) -> str:
    """Upload ``path`` as a mosaic; its id (a refused upload fails the test with the answer)."""
    with path.open("rb") as fh:
        response = client.post("/v1/mosaics", files={"file": (path.name, fh)})
    assert response.status_code in (200, 201), response.text
    return str(response.json()["id"])
