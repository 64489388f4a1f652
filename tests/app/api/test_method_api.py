"""The service runs the model card's method when a job says nothing, and refuses at submit what would fail
at run time; real API and worker processes, real Redis, the tiny model."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import pyvips

from tests.app.conftest import TOKENS, Service, upload_id, wait_for
from tests.conftest import REPO
from tests.worker.engine.test_pipeline import tissue

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def alice(service: Service) -> Iterator[httpx.Client]:
    with service.client("alice") as client:
        yield client


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 um/px PNG (pHYs recorded), the tiny model's own pixel size."""
    path = tmp_path_factory.mktemp("mosaics") / "lesion 12.png"
    pyvips.Image.new_from_array(tissue(150, 170, seed=9)).copy(xres=500.0, yres=500.0).pngsave(str(path))
    return path


def test_the_models_route_gives_each_models_defaults(alice: httpx.Client) -> None:
    models = alice.get("/v1/models").json()["models"]
    tiny = next(m for m in models if m["name"] == "tiny")
    assert tiny["defaults"]["cam"] == "cam" and tiny["defaults"]["step"] == 25
    assert tiny["defaults"]["sigma"] == pytest.approx(64 * 5 / 8)


def test_a_job_with_nothing_given_equals_the_command_line_with_nothing_given(
    alice: httpx.Client, mosaic: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    response = alice.post("/v1/jobs", json={"mosaic_id": upload_id(alice, mosaic)})
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    def finished() -> dict[str, Any] | None:
        body = alice.get(f"/v1/jobs/{job_id}").json()
        assert body["status"] in ("queued", "running", "finished"), body
        return body if body["status"] == "finished" else None

    body = wait_for(finished, timeout=120, what="the job to finish")
    summary = body["result"]["summary"]
    assert {k: v["source"] for k, v in summary["method"].items()} == dict.fromkeys(
        ("cam", "step", "sigma", "threshold"), "card"
    )
    assert summary["sigma"] == pytest.approx(40.0)
    assert (summary["input"]["pixel_size_source"], summary["input"]["name"]) == ("file", "lesion 12.png")
    served = tmp_path / "served.tif"
    served.write_bytes(alice.get(body["result"]["heatmap_tiff"]).content)

    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "segment", str(mosaic), "--out", str(tmp_path / "cli"),
         "--model", str(tiny_model_dir), "--device", "cpu"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    a = np.asarray(pyvips.Image.new_from_file(str(served)).numpy())
    b = np.asarray(pyvips.Image.new_from_file(str(tmp_path / "cli" / "heatmap.tif")).numpy())
    assert a.shape == b.shape == (150, 170)
    # the same parameters; float32 sums in another order (the worker's thread count and batch shape)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    assert a.max() > 0


@pytest.mark.parametrize(
    ("fields", "field", "text"),
    [
        ({"step": True}, "step", "integer"),
        ({"step": 100}, "step", "at most the model's window (64 px)"),
        ({"sigma": math.nan}, "sigma", "must be a number of pixels > 0"),
        ({"pixel_size_um": 1e-300}, "pixel_size_um", "downsample factor above 64"),
        ({"pixel_size_um": 2.2e-311}, "pixel_size_um", "downsample factor above 64"),
    ],
)
def test_what_would_fail_at_run_time_is_refused_at_submit(
    alice: httpx.Client, mosaic: Path, fields: dict[str, Any], field: str, text: str
) -> None:
    content = json.dumps({"mosaic_id": upload_id(alice, mosaic), **fields})  # NaN as JSON5-style NaN
    response = alice.post("/v1/jobs", content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == field and text in body["message"], body
    assert len(body["message"]) < 300


def test_a_mosaic_too_small_for_the_downsample_is_refused_naming_its_size(
    alice: httpx.Client, tmp_path: Path
) -> None:
    tiny = tmp_path / "dot.png"
    pyvips.Image.new_from_array(np.full((1, 1), 200, dtype=np.uint8)).pngsave(str(tiny))
    response = alice.post("/v1/jobs", json={"mosaic_id": upload_id(alice, tiny), "pixel_size_um": 0.5})
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["field"] == "mosaic_id"
    assert "1 x 1 px" in body["message"] and "downsample factor 4" in body["message"]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("step", "100000", "step: must be at most the model's window (64 px), got 100000"),
        ("step", "0", "step: Input should be greater than or equal to 1"),
        ("sigma", "-1", 'sigma: must be a number of pixels > 0 or "none" (plain averaging), got -1'),
    ],
)
def test_a_bad_value_gets_the_same_message_from_the_api_segment_and_submit(
    service: Service,
    alice: httpx.Client,
    mosaic: Path,
    tiny_model_dir: Path,
    tmp_path: Path,
    option: str,
    value: str,
    message: str,
) -> None:
    response = alice.post("/v1/jobs", json={"mosaic_id": upload_id(alice, mosaic), option: json.loads(value)})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == option and response.json()["message"] == message

    cli = [sys.executable, "-m", "app.cli"]
    segment = subprocess.run(
        [*cli, "segment", str(mosaic), "--out", str(tmp_path / "out"), "--model", str(tiny_model_dir),
         "--device", "cpu", f"--{option}", value],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert segment.returncode == 2 and message in segment.stderr, segment.stderr
    assert not (tmp_path / "out").exists()

    token = tmp_path / "token"
    token.write_text(TOKENS["alice"] + "\n")
    submit = subprocess.run(
        [*cli, "submit", "--server", service.url, "--token-file", str(token), "--poll-s", "0.2",
         str(mosaic), "--out", str(tmp_path / "results"), f"--{option}", value],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    assert submit.returncode != 0 and message in submit.stdout + submit.stderr, (submit.stdout, submit.stderr)
