"""Choosing method defaults from a sweep's rows, and writing them into a card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.card import MethodDefaults
from models.errors import InvalidParameter
from models.metrics.dice import DiceSweep
from models.metrics.pixel import PixelMetrics
from worker.evaluation.defaults import choose_defaults, write_card_defaults
from worker.evaluation.metrics import RunSummary
from worker.evaluation.protocol import RunConfig
from worker.io.zoo import read_card


def row(
    cam: str, step: int, sigma: float | None, *, dice: float | None, auc: float | None, t: float = 0.4,
    mode: str = "exact",
) -> RunSummary:  # fmt: skip
    sweep = DiceSweep(
        thresholds=np.array([t]), dice=np.array([np.nan if dice is None else dice]),
        best_threshold=None if dice is None else t, best_dice=dice,
    )  # fmt: skip
    return RunSummary(
        config=RunConfig(cam, mode, step, sigma, None if sigma is None else sigma * 32),  # type: ignore[arg-type]
        pooled=PixelMetrics(n_positive=10, n_negative=10, auc=auc, auc_error_bound=0.0, dice=sweep),
        per_mosaic={},
        boot=None,
        benign_flagged={},
    )


def chosen_key(rows: list[RunSummary], *, scorecam_exact: bool = True) -> str:
    return choose_defaults(rows, scorecam_exact=scorecam_exact, chosen_by="test").run.config.key


def test_the_best_dice_wins_over_a_better_auc() -> None:
    rows = [row("cam", 25, 5, dice=0.80, auc=0.99), row("cam", 50, 5, dice=0.85, auc=0.90)]
    assert chosen_key(rows) == "cam/exact/step50/sigma5"


def test_dice_ties_at_table_precision_go_to_the_higher_auc_then_the_cheaper_run() -> None:
    # 0.8701 and 0.8698 print as 0.870: a tie, so AUC decides.
    rows = [row("cam", 25, 5, dice=0.8701, auc=0.980), row("cam", 50, 2.5, dice=0.8698, auc=0.986)]
    assert chosen_key(rows) == "cam/exact/step50/sigma2.5"
    # Dice and AUC tied: CAM before ScoreCAM, then the larger step (fewer windows).
    rows = [
        row("scorecam", 100, 5, dice=0.8702, auc=0.9861),
        row("cam", 25, 5, dice=0.8701, auc=0.9859),
        row("cam", 50, 5, dice=0.8698, auc=0.9862),
    ]
    assert chosen_key(rows) == "cam/exact/step50/sigma5"
    # Everything tied: the sweep's order.
    rows = [row("cam", 50, None, dice=0.87, auc=0.98), row("cam", 50, 5, dice=0.87, auc=0.98)]
    assert chosen_key(rows) == "cam/exact/step50/sigmanone"


def test_rows_a_card_cannot_express_are_left_out() -> None:
    rows = [
        row("cam", 32, 1, dice=0.99, auc=0.99, mode="dense"),
        row("scorecam", 100, 2.5, dice=0.95, auc=0.99),
        row("cam", 100, 2.5, dice=0.90, auc=0.98),
        row("cam", 25, 2.5, dice=None, auc=None),
    ]
    assert chosen_key(rows, scorecam_exact=False) == "cam/exact/step100/sigma2.5"
    assert chosen_key(rows, scorecam_exact=True) == "scorecam/exact/step100/sigma2.5"
    with pytest.raises(InvalidParameter, match="no row"):
        choose_defaults(rows[:1] + rows[3:], scorecam_exact=True, chosen_by="test")


def test_defaults_carry_the_row_in_processing_pixels_and_its_threshold() -> None:
    chosen = choose_defaults(
        [row("cam", 50, 2.5, dice=0.9, auc=0.9, t=0.38)], scorecam_exact=True, chosen_by="rcmseg evaluate"
    )
    assert chosen.defaults == MethodDefaults(
        cam="cam", step=50, sigma=80.0, threshold=0.38, chosen_by="rcmseg evaluate"
    )
    plain = choose_defaults([row("cam", 25, None, dice=0.9, auc=0.9)], scorecam_exact=True, chosen_by="x")
    assert plain.defaults.sigma == "none"  # plain averaging, said explicitly


def test_write_card_defaults_keeps_the_card_and_is_all_or_nothing(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    before = json.loads((model / "card.json").read_text())
    defaults = MethodDefaults(cam="cam", step=50, sigma=80.0, threshold=0.38, chosen_by="rcmseg evaluate")
    write_card_defaults(model, defaults, validation={"run": "cam/exact/step50/sigma2.5", "best_dice": 0.9})
    after = json.loads((model / "card.json").read_text())
    assert read_card(model).defaults == defaults
    assert after["metrics"]["defaults_validation"]["run"] == "cam/exact/step50/sigma2.5"
    assert {k: v for k, v in after.items() if k not in ("defaults", "metrics")} == {
        k: v for k, v in before.items() if k not in ("defaults", "metrics")
    }
    # A card that does not validate is left as it is, with no temporary file beside it.
    broken = {**after, "num_classes": 2}
    (model / "card.json").write_text(json.dumps(broken))
    with pytest.raises(Exception, match="num_classes"):
        write_card_defaults(model, defaults, validation={})
    assert json.loads((model / "card.json").read_text()) == broken
    assert sorted(p.name for p in model.iterdir()) == sorted(p.name for p in tiny_model_dir.iterdir())
