"""``rcmseg bench`` measures, it does not assert speed: check it reports every stage and a sane ratio."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.bench import BenchConfig, print_result, run_bench, save_result, table
from worker.io.checkpoint import load_model
from worker.io.export import STEPS as EXPORT_STEPS


def test_bench_reports_engine_and_network_rates(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    result = run_bench(
        model,
        BenchConfig(input_size=300, downsample=1, step=48, network_iters=2, batch_size=8),
        workdir=tmp_path,
    )
    assert result["windows"]["total"] == 6 * 6  # starts 0, 48, ..., 192 and 236 on each axis
    for stage in ("read_downsample", "extract", "h2d", "network", "stitch", "heat_dzi", "total"):
        assert stage in result["stage_seconds"], stage
    assert result["engine_windows_per_s"] > 0 and result["network_windows_per_s"] > 0
    # The ratio of the two measured rates (their values depend on the machine's load, so only their
    # consistency is checked).
    ratio = result["engine_windows_per_s"] / result["network_windows_per_s"]
    assert result["engine_to_network"] == pytest.approx(ratio, rel=0.01, abs=0.002)
    rounds = result["rounds"]  # the network and the engine timed alternately, the fastest of each kept
    assert len(rounds["network_windows_per_s"]) == len(rounds["engine_windows_per_s"]) == 2
    assert result["network_windows_per_s"] == pytest.approx(max(rounds["network_windows_per_s"]), rel=0.01)
    assert result["engine_windows_per_s"] == pytest.approx(max(rounds["engine_windows_per_s"]), rel=0.01)
    assert result["peak_rss_mib"] > 0 and result["machine"]["cores"]
    path = save_result(result, tmp_path / "results")
    assert json.loads(path.read_text())["batch_size"] == 8
    assert "engine / network" in table(result)
    read = result["read"]  # the read beside the windows: how much of it the windows waited for
    assert read["read_s"] > 0 and read["waited_s"] >= 0 and 0 <= read["hidden"] <= 1
    assert read["read_s"] == pytest.approx(result["stage_seconds"]["read_downsample"], abs=1e-4)
    export = result["export"]
    assert list(export["steps_s"]) == list(EXPORT_STEPS)
    assert export["bare_dzsave_s"] > 0 and export["mosaic_pyramid_s"] > 0
    assert export["job_export_to_dzsave"] == pytest.approx(
        export["job_export_s"] / export["bare_dzsave_s"], rel=0.01
    )
    assert "mosaic pyramid s" in table(result)


def test_print_result_writes_what_it_prints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = {"windows": 12, "ratio": 0.97, "nested": {"a": [1, 2]}}
    print_result(result, tmp_path / "r.json")
    printed = capsys.readouterr().out
    assert json.loads(printed) == result
    assert (tmp_path / "r.json").read_text(encoding="utf-8") == printed
    print_result(result)  # no file: printing only
    assert json.loads(capsys.readouterr().out) == result
