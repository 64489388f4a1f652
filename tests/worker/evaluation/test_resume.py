"""A stopped ``rcmseg evaluate`` resumes: kept results are reused, never recomputed, and the report is the
uninterrupted run's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.cli import main
from tests.conftest import REPO
from tests.worker.evaluation.test_protocol import dataset, one_thread  # noqa: F401  (fixtures)
from worker.evaluation.report import read_histograms
from worker.evaluation.resume import TMP_PREFIX, WORK_DIR

WAIT_S = 300.0
"""Bound on waiting for a condition; the condition, not the time, ends the wait."""


def kept_files(out: Path) -> dict[str, tuple[int, int]]:
    """Each kept result file (relative name) with its inode and modification time."""
    work = out / WORK_DIR
    return {
        str(p.relative_to(work)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in work.rglob("*.npz")
        if not p.name.startswith(TMP_PREFIX)
    }


def stable_report(out: Path) -> dict[str, Any]:
    """report.json without what differs between two runs of one evaluation (time, command line)."""
    report = json.loads((out / "report.json").read_text())
    for key in ("created", "command", "timings"):
        report.pop(key)
    report["patch_level"].pop("seconds")
    return report


def evaluate_args(mosaics: Path, out: Path, *extra: str) -> list[str]:
    return ["evaluate", "--model", str(extra[0]), "--mosaics", str(mosaics), "--out", str(out),
            "--split", "all", "--cams", "cam", "--sigmas", "none", "1", "--bootstrap", "20",
            "--device", "cpu", "--threads", "1", *extra[1:]]  # fmt: skip


def test_an_evaluation_killed_halfway_resumes_without_redoing_a_finished_mosaic(
    dataset: Path,  # noqa: F811
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    # Pass one (step 16) is quick; pass two (step 8, about four times the windows) keeps the run busy long
    # after the first mosaic is kept, so the kill lands halfway.
    args = evaluate_args(dataset, tmp_path / "run", str(tiny_model_dir), "--steps", "16", "8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    first = tmp_path / "run" / WORK_DIR / "cam-exact-step16" / "m0.npz"
    deadline = time.monotonic() + WAIT_S
    try:
        while not first.is_file():
            if proc.poll() is not None:
                pytest.fail(f"evaluate ended before keeping a mosaic: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            if time.monotonic() > deadline:
                pytest.fail(f"no kept mosaic after {WAIT_S} s")
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()  # type: ignore[union-attr]
    assert proc.returncode == -signal.SIGKILL
    before = kept_files(tmp_path / "run")
    assert "cam-exact-step16/m0.npz" in before
    assert len(before) < 2 * 4 + 1  # stopped halfway: 2 passes x 4 mosaics and the patches were not all kept
    assert not (tmp_path / "run" / "report.json").exists()

    # The same command again resumes: every kept file is reused as it is, the rest is computed.
    assert main(args) == 0
    after = kept_files(tmp_path / "run")
    assert len(after) == 2 * 4 + 1
    for name, stamp in before.items():
        assert after[name] == stamp, f"{name} was computed again"
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    reused = {
        "{}-{}-{}/{}.npz".format(*name.split("/")) if name != "patches" else "patches.npz"
        for name in report["timings"]["reused"]
    }
    assert reused == set(before)  # exactly what the killed run had kept

    # An uninterrupted run of the same command writes the same report, tables, histograms and figures.
    fresh = tmp_path / "fresh"
    assert main(evaluate_args(dataset, fresh, str(tiny_model_dir), "--steps", "16", "8")) == 0
    assert stable_report(tmp_path / "run") == stable_report(fresh)
    for name in ("table2.csv", "table2.md", "per_mosaic.csv", "roc.png"):
        assert (tmp_path / "run" / name).read_bytes() == (fresh / name).read_bytes(), name
    for method_panel in (fresh / "panels").rglob("*.png"):
        twin = tmp_path / "run" / method_panel.relative_to(fresh)
        assert twin.read_bytes() == method_panel.read_bytes(), twin.name
    resumed, whole = (
        read_histograms(tmp_path / "run" / "histograms.npz"),
        read_histograms(fresh / "histograms.npz"),
    )
    assert resumed == whole


def test_a_changed_parameter_redoes_only_the_results_it_touches(
    dataset: Path,  # noqa: F811
    tiny_model_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    common = [str(tiny_model_dir), "--no-panels", "--max-mosaics", "2"]
    assert main(evaluate_args(dataset, out, *common, "--steps", "64")) == 0
    first = kept_files(out)
    assert sorted(first) == ["cam-exact-step64/m0.npz", "cam-exact-step64/m1.npz", "patches.npz"]

    # Bootstrap and seed only change the statistics: everything is reused.
    assert main(evaluate_args(dataset, out, *common, "--steps", "64", "--bootstrap", "5", "--seed", "4")) == 0
    assert kept_files(out) == first
    report = json.loads((out / "report.json").read_text())
    assert len(report["timings"]["reused"]) == 3 and report["protocol"]["bootstrap"]["n_resamples"] == 5

    # A step added to the sweep computes that step's pass only.
    assert main(evaluate_args(dataset, out, *common, "--steps", "64", "128")) == 0
    second = kept_files(out)
    assert {n: second[n] for n in first} == first
    assert sorted(set(second) - set(first)) == ["cam-exact-step128/m0.npz", "cam-exact-step128/m1.npz"]
    report = json.loads((out / "report.json").read_text())
    assert sorted(report["timings"]["reused"]) == ["cam/exact/step64/m0", "cam/exact/step64/m1", "patches"]

    # Other sigmas change every heat map: every pass is computed again, the patch scores are kept.
    assert main(evaluate_args(dataset, out, *common, "--steps", "64", "--sigmas", "none", "2")) == 0
    third = kept_files(out)
    assert third["patches.npz"] == first["patches.npz"]
    assert all(third[n] != first[n] for n in first if n != "patches.npz")
    report = json.loads((out / "report.json").read_text())
    assert report["timings"]["reused"] == ["patches"]

    # Other dense engine settings (tiles, crops) change the dense pass only.
    both = [*common, "--steps", "64", "--sigmas", "none", "2", "--mode", "both"]
    assert main(evaluate_args(dataset, out, *both)) == 0
    fourth = kept_files(out)
    monkeypatch.setattr("worker.evaluation.resume.DENSE_IDENTITY", {"dense_prob_step": 1})
    assert main(evaluate_args(dataset, out, *both)) == 0
    fifth = kept_files(out)
    changed = sorted(n for n in fifth if fifth[n] != fourth.get(n))
    assert changed == ["cam-dense-step32/m0.npz", "cam-dense-step32/m1.npz"], changed

    # A folder that holds something else is still refused.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(evaluate_args(dataset, other, *common)) == 2
    assert "no earlier evaluation" in capsys.readouterr().err


def test_a_result_written_by_another_model_is_not_reused(
    dataset: Path,  # noqa: F811
    tiny_model_dir: Path,
    tmp_path: Path,
) -> None:
    from tests.conftest import make_model_dir

    out = tmp_path / "run"
    common = ["--steps", "64", "--no-panels", "--max-mosaics", "1", "--bootstrap", "0"]
    assert main(evaluate_args(dataset, out, str(tiny_model_dir), *common)) == 0
    first = kept_files(out)
    other = make_model_dir(tmp_path / "other-model", seed=1)
    assert main(evaluate_args(dataset, out, str(other), *common)) == 0
    second = kept_files(out)
    assert set(second) == set(first)
    assert all(second[n] != first[n] for n in first)  # every result computed again
    report = json.loads((out / "report.json").read_text())
    assert report["timings"]["reused"] == []
    with np.load(out / WORK_DIR / "cam-exact-step64" / "m0.npz") as data:
        assert data["positive"].shape == (2, 10_001)
