"""``rcmseg serve``, the embedded default: private Redis, API and a worker from one command, as a new user
runs it; then a restart that finds the job again (Redis is persisted in the data folder); and its
supervision: a killed Redis or API is started again, the reason logged, and Ctrl-C ends with status 0."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import wait_for
from tests.conftest import REPO, free_port


class Serve:
    """One ``rcmseg serve`` process and the lines it printed."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "1"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log.open("ab"),
            text=True,
            start_new_session=True,  # a process group of its own, as a terminal gives it: Ctrl-C reaches all
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def announced(self) -> tuple[str, str]:
        """The URL and token it printed, once it did."""

        def found() -> tuple[str, str] | None:
            if self.proc.poll() is not None:
                pytest.fail(f"rcmseg serve exited with {self.proc.returncode}: {self.lines}")
            text = "\n".join(self.lines)
            url, token = re.search(r"serving at (\S+)", text), re.search(r"^token: (\S+)", text, re.M)
            return (url.group(1), token.group(1)) if url and token else None

        return tuple(wait_for(found, timeout=120, what="rcmseg serve to print its URL and token"))  # type: ignore[return-value]

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def ctrl_c(self) -> int:
        """SIGINT to the whole process group, as Ctrl-C in a terminal sends it."""
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout=60)

    def child(self, command: str) -> int:
        """The pid of the child process whose command line contains ``command``."""
        pid = self.proc.pid
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            with contextlib.suppress(FileNotFoundError):
                if command in Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                    return int(child)
        raise AssertionError(f"no child {command!r} of rcmseg serve")


def serve_env(tiny_model_dir: Path, tmp_path: Path) -> dict[str, str]:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMSEG_") and k != "REDIS_URL"}
    env.update(
        PYTHONUNBUFFERED="1",
        RCMSEG_DATA_DIR=str(tmp_path / "data"),
        RCMSEG_MODEL_ZOO=str(zoo),
        RCMSEG_DEFAULT_MODEL="tiny",
        RCMSEG_DEVICE="cpu",
    )
    return env


@pytest.mark.slow
def test_serve_runs_everything_and_keeps_jobs_across_a_restart(
    tiny_model_dir: Path, real_tile: Path, tmp_path: Path
) -> None:
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    (zoo / "tiny").symlink_to(tiny_model_dir, target_is_directory=True)
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RCMSEG_") and k != "REDIS_URL"}
    env.update(
        PYTHONUNBUFFERED="1",
        RCMSEG_DATA_DIR=str(data),
        RCMSEG_MODEL_ZOO=str(zoo),
        RCMSEG_DEFAULT_MODEL="tiny",
        RCMSEG_DEVICE="cpu",
    )
    port = free_port()
    serve = Serve(env, port, tmp_path / "serve.log")
    try:
        url, token = serve.announced()
        assert url == f"http://127.0.0.1:{port}"
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
            with real_tile.open("rb") as fh:
                mosaic = client.post("/v1/mosaics", files={"file": (real_tile.name, fh)})
            assert mosaic.status_code == 201, mosaic.text
            created = client.post(
                "/v1/jobs", json={"mosaic_id": mosaic.json()["id"], "pixel_size_um": 2, "step": 64}
            )
            job_id = created.json()["id"]

            def finished() -> dict | None:
                body = client.get(f"/v1/jobs/{job_id}").json()
                assert body["status"] in ("queued", "running", "finished"), body
                return body if body["status"] == "finished" else None

            result = wait_for(finished, timeout=180, what="the job to finish")["result"]
            tile = client.get(result["layers"]["heatmap"].replace(".dzi", "_files/0/0_0.png"))
            assert tile.status_code == 200 and tile.headers["content-type"] == "image/png"
            assert client.get(result["layers"]["mask"]).status_code == 200
    finally:
        assert serve.stop() in (0, 130)
    assert (data / "redis" / "redis.log").is_file() and (data / "local-token").read_text().strip() == token
    assert oct((data / "local-token").stat().st_mode & 0o777) == "0o600"

    again = Serve(env, port, tmp_path / "serve.log")
    try:
        url2, token2 = again.announced()
        assert (url2, token2) == (url, token)  # the same token: it is kept in the data folder
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            body = client.get(f"/v1/jobs/{job_id}").json()
            assert body["status"] == "finished" and body["result"]["layers"] == result["layers"]
    finally:
        assert again.stop() in (0, 130)


def back_after(probe: httpx.Client, path: str, expected: int, *, timeout: float = 60) -> float:
    """Seconds until ``path`` answers ``expected`` again; every answer on the way is a 503 or none."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            response = probe.get(path)
        except httpx.TransportError:
            time.sleep(0.05)
            continue
        if response.status_code == expected:
            return time.monotonic() - started
        assert response.status_code == 503 and response.json()["code"] == "queue_unavailable", response.text
        assert int(response.headers["retry-after"]) > 0
        time.sleep(0.05)
    pytest.fail(f"{path} did not answer {expected} within {timeout:.0f} s")


@pytest.mark.slow
def test_serve_restarts_a_killed_redis_and_api_and_stops_cleanly(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = serve_env(tiny_model_dir, tmp_path)
    data = Path(env["RCMSEG_DATA_DIR"])
    log = tmp_path / "serve.log"
    serve = Serve(env, free_port(), log)
    try:
        url, token = serve.announced()
        wait_for(lambda: serve.lines[-1:] == [""], timeout=60, what="the whole banner")
        banner = "\n".join(serve.lines)
        assert "Press Ctrl-C to stop" in banner and str(data / "local-token") in banner
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
            assert client.get("/readyz").json()["ready"] is True  # the banner comes once it is ready
            redis_pid = serve.child("redis-server")
            os.kill(redis_pid, signal.SIGKILL)
            redis_back = back_after(client, "/v1/jobs", 200, timeout=120)
            api_pid = serve.child("app.cli api")
            os.kill(api_pid, signal.SIGKILL)
            api_back = back_after(client, "/healthz", 200, timeout=120)
            # Measured, not asserted: a loaded machine stretches both; the bound is back_after's timeout.
            print(f"killed Redis answered again after {redis_back:.1f} s, killed API after {api_back:.1f} s")
            assert serve.child("redis-server") != redis_pid and serve.child("app.cli api") != api_pid
            assert client.get("/v1/jobs").status_code == 200
            wait_for(lambda: client.get("/readyz").json()["workers"] == 1, timeout=60, what="one live worker")
        for path in (data / "redis").rglob("*"):
            assert path.stat().st_mode & 0o077 == 0, path  # this user's only
    finally:
        code = serve.stop(signal.SIGINT)  # Ctrl-C
    assert code == 0
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    serve_lines = [r["msg"] for r in records if r["logger"] == "app.cli.serve"]
    assert "the private Redis was killed by SIGKILL; restarting it" in serve_lines
    assert "the API was killed by SIGKILL; restarting it" in serve_lines
    assert not any("Traceback" in r.get("exc", "") for r in records if r["level"] == "error")
    assert not any(r["logger"] == "uvicorn.access" for r in records)  # quiet: no line per request


def test_a_part_that_keeps_dying_stops_serve_with_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.cli import serve as serve_module

    monkeypatch.setattr(serve_module, "RESTART_WINDOW_S", 60.0)
    part = serve_module.Part(
        "the private Redis",
        lambda: subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"]),
        delay_s=0.0,
        hint="see <data>/redis/redis.log",
    )
    with pytest.raises(serve_module.ServeError) as failed:
        for _ in range(20):
            part.proc.wait()
            part.check()
    message = str(failed.value)
    assert message.startswith("the private Redis keeps failing (exited with code 1;")
    assert "\n" not in message and message.endswith("see <data>/redis/redis.log")


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_before_redis(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Ctrl-C reaches serve, the API and the workers but not the private Redis (its own process group),
    which serve stops last: no worker logs that it lost Redis on the way out."""
    env = serve_env(tiny_model_dir, tmp_path)
    log = tmp_path / "serve.log"
    serve = Serve(env, free_port(), log)
    try:
        url, token = serve.announced()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
            wait_for(lambda: client.get("/readyz").json()["workers"] == 1, timeout=60, what="one live worker")
        redis_pid = serve.child("redis-server")
        assert os.getpgid(redis_pid) != os.getpgid(serve.proc.pid)
    finally:
        code = serve.ctrl_c()
    assert code == 0
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert [r for r in records if r["level"] in ("error", "critical")] == []
    assert not [r["msg"] for r in records if "Redis" in r["msg"] and r["level"] == "warning"]
    redis_log = (Path(env["RCMSEG_DATA_DIR"]) / "redis" / "redis.log").read_text()
    assert "Received SIGTERM" in redis_log and "SIGINT" not in redis_log  # stopped by serve, not by Ctrl-C
    with pytest.raises(ProcessLookupError):
        os.kill(redis_pid, 0)
