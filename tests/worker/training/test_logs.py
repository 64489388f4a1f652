"""The files a training run keeps beside its model: one JSON line per epoch and the learning curve."""

from __future__ import annotations

import json
from pathlib import Path

from worker.training.logs import CURVE_PNG, METRICS_LOG, write_logs


def test_logs_hold_every_epoch_and_a_curve(tmp_path: Path) -> None:
    history = [
        {"epoch": 1, "train_loss": 0.7, "val_loss": 0.69, "val_auc": None, "val_accuracy": 0.5},
        {"epoch": 2, "train_loss": 0.6, "val_loss": 0.65, "val_auc": 0.8, "val_accuracy": 0.7},
    ]
    write_logs(tmp_path, history)
    lines = (tmp_path / METRICS_LOG).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == history
    assert (tmp_path / CURVE_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([METRICS_LOG, CURVE_PNG])  # no temporary left
