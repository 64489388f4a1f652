"""The paper's questions put to Table 2 of the test split, each as a paired bootstrap of two of its rows.

Does a smaller step beat a larger one? Gaussian weighting plain averaging? CAM ScoreCAM? Is dense mode as
good as exact windows? Each side of a question is the row that the validation split ranks first among its
kind (best pooled Dice, ties by AUC, as the card's rule), so nothing is chosen on the test patients. The
difference A - B is pooled over the test mosaics; its interval comes from resamples that draw the same
mosaics for both rows (:func:`models.metrics.bootstrap.paired_difference`), which is what makes a small
difference between two rows measured on the same mosaics resolvable at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from models.metrics.bootstrap import BootstrapParams, PairedDifference, paired_difference
from models.metrics.roc import ScoreHistogram


@dataclass(frozen=True)
class Question:
    """A minus B, both run keys of the reports."""

    text: str
    a: str
    b: str


def _ranked_first(runs: Sequence[Mapping[str, Any]], prefix: str, *, gaussian: bool = False) -> str | None:
    """The key of the validation run under ``prefix`` with the best pooled Dice, ties by AUC (rounded to 3
    decimals as the card's rule); ``gaussian``: Gaussian rows only."""

    def score(run: Mapping[str, Any]) -> tuple[float, float]:
        dice, auc = run["pooled"]["best_dice"], run["pooled"]["auc"]
        return (-1.0 if dice is None else round(dice, 3)), (-1.0 if auc is None else round(auc, 3))

    found = [r for r in runs if r["key"].startswith(prefix) and not (gaussian and r["sigma_units"] is None)]
    return max(found, key=score)["key"] if found else None


def questions(val_runs: Sequence[Mapping[str, Any]], chosen: str, test_keys: Sequence[str]) -> list[Question]:
    """The questions the validation report's runs can ask; ``chosen`` is the card's row, whose sigma the
    dense row of the test keys (if any) is taken at."""
    out = []
    steps = sorted({r["step_px"] for r in val_runs if r["key"].startswith("cam/exact/")})
    best = {s: key for s in steps if (key := _ranked_first(val_runs, f"cam/exact/step{s}/"))}
    for i, small in enumerate(steps):
        for large in steps[i + 1 :]:
            out.append(Question(f"CAM: step {small} against step {large}", best[small], best[large]))
    for s in steps:
        gaussian = _ranked_first(val_runs, f"cam/exact/step{s}/", gaussian=True)
        if gaussian is not None:
            plain = f"cam/exact/step{s}/sigmanone"
            out.append(Question(f"CAM, step {s}: Gaussian against plain averaging", gaussian, plain))
    for s in sorted({r["step_px"] for r in val_runs if r["key"].startswith("scorecam/exact/")}):
        scorecam = _ranked_first(val_runs, f"scorecam/exact/step{s}/")
        if scorecam is not None and s in best:
            out.append(Question(f"Step {s}: CAM against ScoreCAM", best[s], scorecam))
    sigma = chosen.rsplit("/", 1)[1]
    for dense in (k for k in test_keys if k.startswith("cam/dense/") and k.endswith(f"/{sigma}")):
        out.append(Question("The card's row against dense mode at its sigma", chosen, dense))
    return out


def _with_interval(value: float | None, ci: tuple[float, float] | None) -> str:
    if value is None:
        return "undefined"
    return f"{value:+.3f} ({ci[0]:+.3f} to {ci[1]:+.3f})" if ci else f"{value:+.3f}"


def _verdict(ci: tuple[float, float] | None) -> str:
    if ci is None:
        return "undefined"
    return "A higher" if ci[0] > 0 else "B higher" if ci[1] < 0 else "not resolved"


def comparison_lines(
    val: Mapping[str, Any],
    test: Mapping[str, Any],
    histograms: Mapping[str, Sequence[ScoreHistogram]],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> list[str]:
    """The markdown section: one row per question whose two runs are both in the test histograms."""
    labels = {r["key"]: r["label"] for r in test["runs"]}
    method = {"cam": "CAM", "scorecam": "ScoreCAM"}
    params = BootstrapParams(n_resamples=n_resamples, seed=seed)
    n = len(test["split"]["mosaics"])
    lines = [
        f"Each row is A minus B, pooled over the {n} test mosaics, with the 95 % interval of the "
        f"difference from {n_resamples} resamples that draw the same mosaics for A and B (seed {seed}). "
        "Each side is the row the validation split ranks first among its kind (best pooled Dice, ties by "
        "AUC), so nothing here is chosen on the test patients. A or B higher: the interval excludes 0; "
        "not resolved: it holds 0.",
        "",
        "| Question | A | B | AUC A - B (95% CI) | AUC | Dice A - B (95% CI) | Dice |",
        "|---|---|---|---:|---|---:|---|",
    ]
    for q in questions(val["runs"], val["chosen_defaults"]["run"], list(histograms)):
        if not {q.a, q.b} <= histograms.keys() & labels.keys() or q.a == q.b:
            continue
        d: PairedDifference = paired_difference(histograms[q.a], histograms[q.b], params=params)
        side = [
            labels[k] if "/dense/" in k else f"{method[k.split('/')[0]]}: {labels[k]}" for k in (q.a, q.b)
        ]
        lines.append(
            f"| {q.text} | {side[0]} | {side[1]} | {_with_interval(d.auc, d.auc_ci)} | {_verdict(d.auc_ci)} "
            f"| {_with_interval(d.best_dice, d.best_dice_ci)} | {_verdict(d.best_dice_ci)} |"
        )
    return lines
