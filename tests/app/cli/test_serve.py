"""``rcmseg serve``, the embedded default: private Redis, API and a worker from one command, as a new user
runs it; then a restart that finds the job again (Redis is persisted in the data folder)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import wait_for
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.slow


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

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


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
