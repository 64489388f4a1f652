"""The precision benchmark runs ``rcmseg evaluate`` once per precision and reports the metric changes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from benchmarks import precision_eval
from tests.worker.evaluation.test_protocol import dataset  # noqa: F401  (fixture)


def test_the_card_threshold_s_dice_is_read_at_the_nearest_threshold() -> None:
    pooled = {"auc": 0.9, "best_dice": 0.8, "best_threshold": 0.3,
              "dice_thresholds": [0.1, 0.2, 0.3, 0.4], "dice": [0.5, 0.6, 0.8, 0.7]}  # fmt: skip
    report = {"runs": [{"mode": "exact", "pooled": pooled}]}
    got = precision_eval.run_metrics(report, 0.21)
    assert got == {"auc": 0.9, "best_dice": 0.8, "best_threshold": 0.3, "dice_at_card_threshold": 0.6}


def test_three_precisions_on_annotated_mosaics(
    dataset: Path,  # noqa: F811
    tiny_model_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "precision"
    argv = ["precision_eval", "--model", str(tiny_model_dir), "--mosaics", str(dataset), "--split", "all",
            "--out", str(out), "--step", "64", "--sigma", "32"]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    assert precision_eval.main() == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result["precisions"]) == ["fp32", "bf16", "fp16"] and result["step"] == 64
    for precision, metrics in result["precisions"].items():
        report = json.loads((out / precision / "report.json").read_text())
        assert report["protocol"]["precision"] == precision
        assert 0 <= metrics["auc"] <= 1 and 0 <= metrics["dice_at_card_threshold"] <= metrics["best_dice"]
    for precision in ("bf16", "fp16"):
        for key, delta in result["against_fp32"][precision].items():
            assert delta == result["precisions"][precision][key] - result["precisions"]["fp32"][key]
    mtimes = {p: (out / p / "report.json").stat().st_mtime_ns for p in result["precisions"]}
    assert precision_eval.main() == 0  # finished evaluations are reused, not run again
    assert {p: (out / p / "report.json").stat().st_mtime_ns for p in mtimes} == mtimes
