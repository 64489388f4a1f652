"""Table 2 as the paper lays it out (``table2.csv``, ``table2.md``) and the per-mosaic table."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.method import PLAIN_AVERAGING
from models.metrics.patch import patch_metrics
from worker.evaluation.metrics import CAM_TITLES, RunSummary, best_runs, mosaic_dice, run_label, sigma_text
from worker.evaluation.protocol import EvalResult, RunConfig


def _num(value: float | None, digits: int = 4) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _rows(
    result: EvalResult, summaries: Sequence[RunSummary]
) -> list[tuple[RunConfig, dict[str, RunSummary]]]:
    """Table rows keyed by (mode, step, sigma), each holding the run of every CAM method."""
    rows: dict[tuple[str, int, float | None], tuple[RunConfig, dict[str, RunSummary]]] = {}
    for s in summaries:
        c = s.config
        row = rows.setdefault((c.mode, c.step, c.sigma_units), (c, {}))
        row[1][c.cam] = s
    order = {m: i for i, m in enumerate(("exact", "dense"))}
    return sorted(
        rows.values(),
        key=lambda r: (order[r[0].mode], r[0].step, -1.0 if r[0].sigma_units is None else r[0].sigma_units),
    )


def write_table2_csv(path: Path, result: EvalResult, summaries: Sequence[RunSummary]) -> None:
    cams = list(result.params.cams)
    fields = ["run", "mode", "step_px", "sigma_units", "sigma_px"]
    per_cam = ["auc", "auc_ci_low", "auc_ci_high", "auc_error_bound", "dice", "threshold", "dice_ci_low",
               "dice_ci_high"]  # fmt: skip
    fields += [f"{cam}_{name}" for cam in cams for name in per_cam]
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(fields)
        for config, runs in _rows(result, summaries):
            row: list[Any] = [
                run_label(config, result.stride),
                config.mode,
                config.step,
                sigma_text(config),
                "" if config.sigma_px is None else f"{config.sigma_px:g}",
            ]
            for cam in cams:
                s = runs.get(cam)
                if s is None:
                    row += [""] * len(per_cam)
                    continue
                auc_ci = s.boot.auc_ci if s.boot is not None else None
                dice_ci = s.boot.best_dice_ci if s.boot is not None else None
                row += [
                    _num(s.pooled.auc, 6),
                    _num(auc_ci[0], 6) if auc_ci else "",
                    _num(auc_ci[1], 6) if auc_ci else "",
                    _num(s.pooled.auc_error_bound, 8),
                    _num(s.pooled.dice.best_dice, 6),
                    _num(s.pooled.dice.best_threshold, 2),
                    _num(dice_ci[0], 6) if dice_ci else "",
                    _num(dice_ci[1], 6) if dice_ci else "",
                ]
            writer.writerow(row)


def table2_markdown(
    result: EvalResult, summaries: Sequence[RunSummary], *, chosen: dict[str, Any] | None = None
) -> str:
    """The paper's Table 2 for this split, then the best rows with their bootstrap intervals; ``chosen``
    (the report's ``chosen_defaults``) is named in a note."""
    lines = [*_table2_intro(result, summaries), *_table2_rows(result, summaries)]
    lines += _best_with_intervals(result, best_runs(summaries))
    notes = _table2_notes(result, summaries)
    if chosen is not None:
        d = chosen["defaults"]
        sigma = "plain averaging" if d["sigma"] == PLAIN_AVERAGING else f"sigma {d['sigma']:g} px"
        notes.append(
            f"Method defaults chosen on this split: {chosen['label']} ({d['cam']}, step {d['step']} px, "
            f"{sigma}, threshold {d['threshold']:.2f}); rule: {chosen['rule']}."
        )
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def _table2_intro(result: EvalResult, summaries: Sequence[RunSummary]) -> list[str]:
    """What the table shows, in which units, and its header."""
    params, card, cams = result.params, result.model.card, list(result.params.cams)
    bounds = [s.pooled.auc_error_bound for s in summaries if s.pooled.auc_error_bound is not None]
    n = len(result.split.mosaics)
    return [
        f"Pixel AUC and best Dice on the {result.split.name} split ({n} mosaic{'s' if n != 1 else ''}, "
        f"model {card.name}).",
        "",
        f"Step size in processing pixels ({card.pixel_size_um:g} um/px). Sigma of the Gaussian weighting "
        f"in units of the network's output stride ({result.stride} px), its value in px in brackets; "
        '"no Gaussian" is plain averaging. AUC over labelled pixels (aspecific positive, benign negative, '
        f"unlabelled ignored) pooled over the split, from {params.n_bins}-bin score histograms "
        f"(AUC error <= {max(bounds) if bounds else 0:.1e}). Dice: the best over thresholds 0, 0.02, ..., 1, "
        "the threshold in brackets. Bold: the best value of a column (exact and dense rows apart).",
        "",
        f"| Run (step px, sigma x {result.stride} px) | "
        + " | ".join(f"{CAM_TITLES[c]} AUC | {CAM_TITLES[c]} Dice" for c in cams)
        + " |",
        "|---|" + "---:|---:|" * len(cams),
    ]


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on and text else text


def _table2_rows(result: EvalResult, summaries: Sequence[RunSummary]) -> list[str]:
    """One line per (mode, step, sigma); the best value of each column in bold."""
    cams = list(result.params.cams)
    top_auc: dict[tuple[str, str], float] = {}
    top_dice: dict[tuple[str, str], float] = {}
    for s in summaries:  # the best of each column, exact and dense rows apart
        column = (s.config.cam, s.config.mode)
        top_auc[column] = max(top_auc.get(column, -1.0), s.pooled.auc or -1.0)
        top_dice[column] = max(top_dice.get(column, -1.0), s.pooled.dice.best_dice or -1.0)
    lines = []
    for config, runs in _rows(result, summaries):
        cells = [run_label(config, result.stride)]
        for cam in cams:
            run = runs.get(cam)
            if run is None:
                cells += ["-", "-"]
                continue
            auc, dice, t = run.pooled.auc, run.pooled.dice.best_dice, run.pooled.dice.best_threshold
            column = (cam, config.mode)
            cells.append(_bold(_num(auc, 3) or "undefined", auc is not None and auc == top_auc[column]))
            dice_text = f"{dice:.3f} ({t:.2f})" if dice is not None and t is not None else "undefined"
            cells.append(_bold(dice_text, dice is not None and dice == top_dice[column]))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _best_with_intervals(result: EvalResult, best: dict[str, RunSummary]) -> list[str]:
    """The best run of each method with its bootstrap intervals (nothing without a bootstrap)."""
    if not any(s.boot is not None for s in best.values()):
        return []
    params, n = result.params, len(result.split.mosaics)
    lines = [
        "",
        f"Best run of each method with 95% bootstrap intervals ({params.bootstrap} resamples of the "
        f"{n} mosaics with replacement, seed {params.seed}):",
        "",
        "| Method | Run | AUC | AUC 95% CI | Dice | Dice 95% CI |",
        "|---|---|---:|---|---:|---|",
    ]
    for method, s in best.items():
        b = s.boot
        auc_ci = f"{b.auc_ci[0]:.3f} - {b.auc_ci[1]:.3f}" if b is not None and b.auc_ci else "-"
        dice_ci = f"{b.best_dice_ci[0]:.3f} - {b.best_dice_ci[1]:.3f}" if b and b.best_dice_ci else "-"
        lines.append(
            f"| {method} | {run_label(s.config, result.stride)} | {_num(s.pooled.auc, 3) or 'undefined'} "
            f"| {auc_ci} | {_num(s.pooled.dice.best_dice, 3) or 'undefined'} | {dice_ci} |"
        )
    return lines


def _table2_notes(result: EvalResult, summaries: Sequence[RunSummary]) -> list[str]:
    """ScoreCAM's options, mosaics whose AUC is undefined, and the patch level."""
    params, notes = result.params, []
    if "scorecam" in params.cams:
        if params.steps_of("scorecam") != params.steps:
            steps = ", ".join(str(s) for s in params.steps_of("scorecam"))
            notes.append(f"ScoreCAM rows at step {steps} px only (its other steps not run).")
        if params.scorecam_top_k is None and params.scorecam_skip_below == 0:
            notes.append("ScoreCAM rows are exact (every channel scored, no window skipped).")
        else:
            notes.append(
                "ScoreCAM rows use speed options: "
                f"top-k = {params.scorecam_top_k or 'all'} channels per window, "
                f"skip-below = {params.scorecam_skip_below:g} (windows with p below it get a zero map)."
            )
    undefined = sorted({name for s in summaries for name, m in s.per_mosaic.items() if m.auc is None})
    if undefined:
        notes.append(
            f"Per-mosaic AUC is undefined (one class only) for {len(undefined)} mosaic(s): "
            f"{', '.join(undefined)}; their pixels still count in the pooled numbers."
        )
    if result.patches is not None:
        m = patch_metrics(result.patches.prob, result.patches.label)
        notes.append(
            f"Patch level ({m.n} patches, {m.n_positive} aspecific): AUC {_num(m.auc, 3) or 'undefined'}, "
            f"accuracy at 0.5 {m.accuracy:.2%}."
        )
    return notes


def write_per_mosaic_csv(path: Path, result: EvalResult, summaries: Sequence[RunSummary]) -> None:
    patients = {m.name: m.patient for m in result.split.mosaics}
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["run", "cam", "mode", "step_px", "sigma_units", "sigma_px", "mosaic", "patient", "n_positive",
             "n_negative", "auc", "auc_error_bound", "best_threshold", "best_dice",
             "benign_flagged_at_run_threshold"]
        )  # fmt: skip
        for s in summaries:
            c = s.config
            for name, m in s.per_mosaic.items():
                sigma_px = "" if c.sigma_px is None else f"{c.sigma_px:g}"
                dice = mosaic_dice(m)
                writer.writerow(
                    [c.key, c.cam, c.mode, c.step, sigma_text(c), sigma_px, name, patients[name],
                     m.n_positive, m.n_negative,
                     "undefined" if m.auc is None else f"{m.auc:.6f}", _num(m.auc_error_bound, 8),
                     _num(m.dice.best_threshold, 2) if dice is not None else "",
                     "undefined" if dice is None else _num(dice, 6),
                     _num(s.benign_flagged[name], 6)]
                )  # fmt: skip
