"""Choosing a model's method defaults from a Table 2 sweep, and writing them into its card.

The rule (also in docs/results/phantom-benchmark.md, "Method defaults"): among the exact-window rows of
the sweep whose settings a card can express, the highest pooled best Dice wins; ties go to the higher pooled
AUC, then to the cheaper run (CAM before ScoreCAM, then the larger step, i.e. fewer windows), then to the
sweep's order (sigmas as listed). Dice and AUC are compared rounded to ``DECIMALS`` places, as Table 2
prints them: differences below that are far inside the bootstrap intervals of a validation split and
should not buy a four times costlier step.

Defaults are chosen on the validation patients only: the test patients stay unseen until the final
figures (the command line refuses to write defaults from another split).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.card import MethodDefaults, parse_card
from models.errors import InvalidParameter
from models.method import PLAIN_AVERAGING
from worker.evaluation.metrics import RunSummary
from worker.io.zoo import CARD_FILE

DECIMALS = 3
"""Dice and AUC are compared at the precision Table 2 prints."""
RULE = (
    f"highest pooled best Dice (rounded to {DECIMALS} decimals), ties broken by the higher pooled AUC "
    f"(rounded to {DECIMALS} decimals), then by the cheaper run (CAM before ScoreCAM, then the larger "
    "step), then by the sweep's order; exact-window rows only, ScoreCAM rows only when exact"
)
CHOICE_SPLIT = "val"
"""The only split defaults may be written from."""


@dataclass(frozen=True)
class ChosenDefaults:
    """The row the rule picked and the defaults it stands for."""

    run: RunSummary
    defaults: MethodDefaults
    candidates: int

    def as_dict(self, *, split: str, mosaics: int) -> dict[str, Any]:
        pooled = self.run.pooled
        return {
            "run": self.run.config.key,
            "rule": RULE,
            "split": split,
            "mosaics": mosaics,
            "candidates": self.candidates,
            "auc": pooled.auc,
            "best_dice": pooled.dice.best_dice,
            "best_threshold": pooled.dice.best_threshold,
            "defaults": self.defaults.model_dump(),
        }


def _rounded(value: float | None) -> float:
    return -math.inf if value is None else round(value, DECIMALS)


def _cost_rank(s: RunSummary) -> tuple[int, int]:
    """Smaller is cheaper: CAM before ScoreCAM, then fewer windows (larger step)."""
    return (0 if s.config.cam == "cam" else 1, -s.config.step)


def choose_defaults(
    summaries: Sequence[RunSummary], *, scorecam_exact: bool, chosen_by: str
) -> ChosenDefaults:
    """The defaults of the best row by :data:`RULE`; ``chosen_by`` is recorded with them.

    ``scorecam_exact``: whether the sweep's ScoreCAM rows are exact; rows computed with speed options are
    left out, since a card's defaults cannot carry those options (exact ScoreCAM would run instead).
    """
    candidates = [
        s
        for s in summaries
        if s.config.mode == "exact"
        and (s.config.cam == "cam" or scorecam_exact)
        and s.pooled.dice.best_dice is not None
        and s.pooled.dice.best_threshold is not None
    ]
    if not candidates:
        raise InvalidParameter(
            "no row of the sweep can be a default: Dice is undefined everywhere (no aspecific pixel in the "
            "split?) or only dense / approximate ScoreCAM rows were run"
        )
    order = {id(s): i for i, s in enumerate(summaries)}
    best = min(
        candidates,
        key=lambda s: (
            -_rounded(s.pooled.dice.best_dice),
            -_rounded(s.pooled.auc),
            _cost_rank(s),
            order[id(s)],
        ),
    )
    defaults = MethodDefaults(
        cam=best.config.cam,
        step=best.config.step,
        sigma=PLAIN_AVERAGING if best.config.sigma_px is None else best.config.sigma_px,
        threshold=float(best.pooled.dice.best_threshold or 0.0),  # never None here: filtered above
        chosen_by=chosen_by,
    )
    return ChosenDefaults(run=best, defaults=defaults, candidates=len(candidates))


def write_card_defaults(model_dir: Path, defaults: MethodDefaults, *, validation: dict[str, Any]) -> None:
    """Replace the ``defaults`` of ``model_dir``'s card.json atomically (a temporary file renamed over it).

    Every other field is kept as it is; ``validation`` (the chosen row's figures) goes into
    ``metrics.defaults_validation``. The new card is validated before it replaces the old one.
    """
    path = model_dir / CARD_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise InvalidParameter(f"{path}: card.json must hold a JSON object")
    data["defaults"] = defaults.model_dump()
    metrics = data.get("metrics")
    data["metrics"] = {**(metrics if isinstance(metrics, dict) else {}), "defaults_validation": validation}
    parse_card(data, source=str(model_dir))
    fd, tmp = tempfile.mkstemp(prefix=".card-", suffix=".json", dir=model_dir)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, indent=2) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
