"""What a training run writes beside its model after each epoch: ``metrics.jsonl``, ``learning_curve.png``.

The curve is drawn with matplotlib's object-oriented ``Figure`` (no pyplot state, no backend switch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

METRICS_LOG = "metrics.jsonl"
CURVE_PNG = "learning_curve.png"


def write_curve(path: Path, history: list[dict[str, Any]]) -> None:
    """Training/validation loss and validation AUC/accuracy per epoch."""
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("BCE loss")
    ax1.legend()
    ax2.plot(epochs, [h["val_auc"] for h in history], "o-", label="validation AUC")
    ax2.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="validation accuracy at 0.5")
    ax2.set_xlabel("epoch")
    scores = [v for h in history for v in (h["val_auc"], h["val_accuracy"]) if v is not None]
    ax2.set_ylim(min([0.4, *scores]) - 0.05, 1.0)
    ax2.legend(loc="lower right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)  # a file, not a folder: a rename is the whole swap


def write_logs(out: Path, history: list[dict[str, Any]]) -> None:
    """``metrics.jsonl`` (one line per epoch) and the learning curve, into the model folder ``out``."""
    (out / METRICS_LOG).write_text("".join(json.dumps(h) + "\n" for h in history), encoding="utf-8")
    write_curve(out / CURVE_PNG, history)
