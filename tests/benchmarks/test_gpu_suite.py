"""The GPU suite's quick run on the CPU: every section runs and lands in one JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

SECTIONS = ("engine", "windows", "compiled", "dense", "scorecam", "training", "precision")


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
    assert compiled["engine-bf16-16"]["compile_warmup_s"] > 0 and compiled["windows-bf16-16"]["windows"] > 0
    assert result["scorecam"]["runs"]["exact"]["exact"] is True
    assert result["training"]["images_per_s"] > 0
    assert set(result["precision"]["against_fp32"]) == {"bf16", "fp16"}
    assert result["spent_s"] < result["budget_s"]
