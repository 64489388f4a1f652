"""Writing an evaluation: ``report.json`` with every number, the tables, the histograms and the figures.

Files written into the output folder:

- ``report.json``: every number (protocol, patch level with each patch's probability, every run's pooled
  metrics with its Dice sweep and bootstrap ROC band, per-mosaic metrics, timings);
- ``table2.csv`` and ``table2.md``: laid out like the paper's Table 2 (one row per step and sigma, AUC and
  Dice per CAM method), with the units stated;
- ``per_mosaic.csv``: AUC (``undefined`` where a mosaic holds one class only) and best Dice of every mosaic
  in every run;
- ``histograms.npz``: the per-mosaic score histograms every pixel number is computed from.

:func:`benchmark_markdown` builds the benchmark page from a validation and a test run's reports.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from models.metrics.dice import DICE_THRESHOLDS
from models.metrics.patch import patch_metrics, patch_roc_curve
from models.metrics.roc import ScoreHistogram
from worker.evaluation.comparisons import comparison_lines
from worker.evaluation.defaults import CHOICE_SPLIT, choose_defaults
from worker.evaluation.figures import write_figures
from worker.evaluation.metrics import RunSummary, best_runs, mosaic_dice, run_label, summarise
from worker.evaluation.protocol import EvalResult
from worker.evaluation.resume import write_atomic
from worker.evaluation.tables import table2_markdown, write_per_mosaic_csv, write_table2_csv
from worker.progress import ProgressFn

PAPER_PATCH_AUC = 0.947
TARGET_PATCH_AUC = (0.92, 0.97)
"""The paper's held-out patch AUC and the range a demo model trained on phantoms should land in."""


def run_dict(summary: RunSummary, result: EvalResult) -> dict[str, Any]:
    c = summary.config
    patients = {m.name: m.patient for m in result.split.mosaics}
    per_mosaic = {}
    for name, metrics in summary.per_mosaic.items():
        entry = metrics.as_dict()
        entry["patient"] = patients[name]
        entry["auc_defined"] = metrics.auc is not None
        if metrics.auc is None:
            entry["auc_note"] = "undefined: the mosaic holds one class only"
        if mosaic_dice(metrics) is None:
            entry["best_dice"] = entry["best_threshold"] = None
            entry["dice_note"] = "undefined: no aspecific pixel (Dice is 0 wherever anything is flagged)"
        entry["benign_flagged_at_run_threshold"] = summary.benign_flagged[name]
        per_mosaic[name] = entry
    return {
        "key": c.key,
        "method": c.method,
        "cam": c.cam,
        "mode": c.mode,
        "step_px": c.step,
        "sigma_units": c.sigma_units,
        "sigma_px": c.sigma_px,
        "label": run_label(c, result.stride),
        "pooled": summary.pooled.as_dict(),
        "bootstrap": None if summary.boot is None else summary.boot.as_dict(),
        "per_mosaic": per_mosaic,
    }


def patch_dict(result: EvalResult) -> dict[str, Any] | None:
    scores = result.patches
    if scores is None:
        return None
    metrics = patch_metrics(scores.prob, scores.label)
    roc = patch_roc_curve(scores.prob, scores.label)
    table = scores.table
    return {
        "n": metrics.n,
        "n_positive": metrics.n_positive,
        "auc": metrics.auc,
        "accuracy": metrics.accuracy,
        "threshold": metrics.threshold,
        "crop_px": result.model.card.window,
        "seconds": round(scores.seconds, 3),
        "roc": None if roc is None else {"fpr": roc.fpr.tolist(), "tpr": roc.tpr.tolist()},
        "patches": [
            {"mosaic": m, "x": int(x), "y": int(y), "code": int(code), "prob": float(p)}
            for m, x, y, code, p in zip(table.mosaic, table.x, table.y, table.code, scores.prob, strict=True)
        ],
    }


def timing_dict(result: EvalResult) -> dict[str, Any]:
    """Seconds per mosaic for each pass (all sigmas of a pass share its windows)."""
    groups: dict[str, list[Any]] = {}
    for r in result.records:
        groups.setdefault(f"{r.cam}/{r.mode}/step{r.step}", []).append(r)
    per_pass = {}
    for key, records in groups.items():
        windows = sum(r.windows - r.skipped for r in records)
        seconds = sum(r.seconds for r in records)
        per_pass[key] = {
            "mosaics": len(records),
            "sigmas": records[0].sigmas,
            "seconds_per_mosaic": seconds / len(records),
            "windows_per_mosaic": windows / len(records),
            "seconds_per_window": seconds / windows if windows else None,
            "network_seconds_per_mosaic": sum(r.network_s for r in records) / len(records),
            "stitch_seconds_per_mosaic": sum(r.stitch_s for r in records) / len(records),
        }
    return {
        "total_s": round(result.seconds, 3),
        "device": result.device,
        "reused": list(result.reused),
        "per_pass": per_pass,
        "passes": [vars(r) for r in result.records],
    }


def defaults_dict(
    result: EvalResult, summaries: Sequence[RunSummary], *, command: str | None
) -> dict[str, Any]:
    """The row the defaults rule picks (:mod:`worker.evaluation.defaults`) and the defaults it stands for."""
    params, split = result.params, result.split
    n = len(split.mosaics)
    chosen_by = (
        f"{command or f'rcmseg evaluate --split {split.name}'} (split {split.name}: {n} "
        f"mosaic{'s' if n != 1 else ''}, patients {', '.join(sorted({m.patient for m in split.mosaics}))})"
    )
    chosen = choose_defaults(
        summaries,
        scorecam_exact=params.scorecam_top_k is None and params.scorecam_skip_below == 0,
        chosen_by=chosen_by,
    )
    out = chosen.as_dict(split=split.name, mosaics=len(split.mosaics))
    out["label"] = run_label(chosen.run.config, result.stride)
    if split.name != CHOICE_SPLIT:
        out["warning"] = f"chosen on the {split.name} split; defaults for a card come from the val split"
    return out


def build_report(
    result: EvalResult,
    summaries: Sequence[RunSummary],
    *,
    command: str | None = None,
    choose: bool = False,
) -> dict[str, Any]:
    """Every number of the evaluation; with ``choose``, also ``chosen_defaults`` (:func:`defaults_dict`)."""
    from worker.provenance import package_version

    params, card, model = result.params, result.model.card, result.model
    best = best_runs(summaries)
    bounds = [s.pooled.auc_error_bound for s in summaries if s.pooled.auc_error_bound is not None]
    return {
        "rcmseg_version": package_version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "model": {
            "name": card.name,
            "arch": card.arch,
            "window": card.window,
            "pixel_size_um": card.pixel_size_um,
            "weights_sha256": model.weights_sha256,
            "path": str(model.path),
        },
        "split": {
            "name": result.split.name,
            "patch_table": None if result.split.table_path is None else str(result.split.table_path),
            "mosaics": [m.name for m in result.split.mosaics],
            "patients": sorted({m.patient for m in result.split.mosaics}),
        },
        "protocol": {
            "labels": {"positive": "aspecific (6)", "negative": "benign (1-5)", "ignored": "unlabelled (0)"},
            "step_unit": f"processing pixels ({card.pixel_size_um:g} um/px)",
            "sigma_unit": f"network output stride ({result.stride} px)",
            "output_stride_px": result.stride,
            "steps_px": list(params.steps),
            "sigma_units": list(params.sigma_units),
            "modes": list(params.modes),
            "cams": list(params.cams),
            "n_bins": params.n_bins,
            "auc_error_bound_max": max(bounds) if bounds else None,
            "auc_error_note": "AUC from fixed-bin histograms; |binned - exact| <= "
            "sum_b pos_b neg_b / (2 P N), reported per run as auc_error_bound",
            "dice_thresholds": [float(t) for t in DICE_THRESHOLDS],
            "bootstrap": {"n_resamples": params.bootstrap, "seed": params.seed, "confidence": 0.95},
            "scorecam": {
                "top_k": params.scorecam_top_k,
                "skip_below": params.scorecam_skip_below,
                "exact": params.scorecam_top_k is None and params.scorecam_skip_below == 0,
                "steps_px": list(params.steps_of("scorecam")),
            },
            "precision": params.precision,
            "device": result.device,
        },
        "patch_level": patch_dict(result),
        "best": {method: s.config.key for method, s in best.items()},
        "chosen_defaults": defaults_dict(result, summaries, command=command) if choose else None,
        "runs": [run_dict(s, result) for s in summaries],
        "timings": timing_dict(result),
    }


def write_histograms(path: Path, result: EvalResult) -> None:
    """``keys`` (runs) x ``mosaics`` x bins counts of aspecific (``positive``) and benign (``negative``)."""
    keys = [c.key for c in result.configs]

    def stack(attr: str) -> np.ndarray:
        return np.stack([np.stack([getattr(h, attr) for h in result.histograms[k]]) for k in keys]).astype(
            np.uint32
        )

    np.savez_compressed(
        path,
        keys=np.array(keys),
        mosaics=np.array([m.name for m in result.split.mosaics]),
        positive=stack("positive"),
        negative=stack("negative"),
    )


def read_histograms(path: Path) -> dict[str, list[ScoreHistogram]]:
    """The per-mosaic histograms of ``histograms.npz`` by run key."""
    with np.load(path) as data:
        return {
            str(key): [
                ScoreHistogram.from_counts(p.astype(np.int64), n.astype(np.int64))
                for p, n in zip(data["positive"][i], data["negative"][i], strict=True)
            ]
            for i, key in enumerate(data["keys"])
        }


def write_report(
    out: Path,
    result: EvalResult,
    *,
    command: str | None = None,
    histograms: bool = True,
    choose: bool = False,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Every file of an evaluation into ``out`` (figures included); returns the report. ``choose``: pick
    the method defaults from the sweep (``report["chosen_defaults"]``, named in ``table2.md``)."""
    out.mkdir(parents=True, exist_ok=True)
    summaries = summarise(result, progress=progress)
    t0 = time.perf_counter()
    report = build_report(result, summaries, command=command, choose=choose)
    report["figures"] = write_figures(out, result, summaries, progress=progress)
    report["timings"]["report_s"] = round(time.perf_counter() - t0, 3)
    write_table2_csv(out / "table2.csv", result, summaries)
    (out / "table2.md").write_text(
        table2_markdown(result, summaries, chosen=report["chosen_defaults"]), encoding="utf-8"
    )
    write_per_mosaic_csv(out / "per_mosaic.csv", result, summaries)
    if histograms:
        write_histograms(out / "histograms.npz", result)
    # last and whole: a report.json in the folder means the evaluation finished
    write_atomic(out / "report.json", (json.dumps(report, indent=1) + "\n").encode())
    return report


def _table_of(path: Path) -> str:
    """The run's own table2.md (written by ``rcmseg evaluate``), without its first heading."""
    text = (path.parent / "table2.md").read_text(encoding="utf-8")
    return "\n".join(line for line in text.splitlines() if not line.startswith("# "))


def _timing_rows(report: dict[str, Any]) -> list[str]:
    rows = [
        "| pass | mosaics | windows a mosaic | seconds a mosaic | seconds a window |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, t in report["timings"]["per_pass"].items():
        per_window = t["seconds_per_window"]
        rows.append(
            f"| {key} | {t['mosaics']} | {t['windows_per_mosaic']:.0f} | {t['seconds_per_mosaic']:.1f} | "
            f"{'' if per_window is None else f'{per_window:.4f}'} |"
        )
    return rows


def _comparisons(val: dict[str, Any], test: dict[str, Any], histograms: Path) -> list[str]:
    if not histograms.is_file():
        return [f"Not computed: `{histograms}` is missing (the test run had --no-histograms)."]
    return comparison_lines(val, test, read_histograms(histograms))


def benchmark_markdown(root: Path, *, command: str, difficulty: str) -> str:
    """docs/results/phantom-benchmark.md from the validation and test reports under ``root``
    (``eval-val`` and ``eval-test``, as :mod:`worker.evaluation.full_protocol` writes them)."""
    val_path, test_path = root / "eval-val" / "report.json", root / "eval-test" / "report.json"
    val = json.loads(val_path.read_text(encoding="utf-8"))
    test = json.loads(test_path.read_text(encoding="utf-8"))
    chosen = val["chosen_defaults"]
    patch = test["patch_level"]
    low, high = TARGET_PATCH_AUC
    in_range = patch is not None and low <= patch["auc"] <= high
    row = next(r for r in test["runs"] if r["key"] == chosen["run"])["pooled"]  # the card's row, on test
    lines = [
        "# phantom-b2 on phantoms: the paper's protocol",
        "",
        "**Phantom numbers say nothing about accuracy on real RCM mosaics.** The phantoms are drawn by "
        "`rcmseg phantom` from textures that imitate the patterns of the paper's Table 1, and the demo model "
        "was trained on phantoms of the same generator. What these numbers show is that the pipeline (weak "
        "labels, training, sliding-window CAM, Gaussian stitching, the evaluation itself) reproduces the "
        "paper's protocol end to end; a lab with annotated mosaics gets the same tables for its own model.",
        "",
        f"Generated by `{command}` on {datetime.now(UTC).date().isoformat()} from `{val_path}` and "
        f"`{test_path}`; do not edit by hand.",
        "",
        f"Phantoms: 60 of 3.5 x 3.5 mm, seed 0, difficulty `{difficulty}` (docs/phantom.md). Model: "
        f"{test['model']['name']} ({test['model']['arch']}), "
        f"weights sha256 `{test['model']['weights_sha256'][:16]}`.",
        "",
        "## Patch level (test split)",
        "",
        "| | test patches | AUC | accuracy at 0.5 |",
        "| --- | ---: | ---: | ---: |",
    ]
    if patch is not None:
        lines.append(
            f"| phantom-b2 on phantoms | {patch['n']} ({patch['n_positive']} aspecific) | "
            f"{patch['auc']:.3f} | {100 * patch['accuracy']:.2f} % |"
        )
    lines += [
        f"| the paper (real data) | | {PAPER_PATCH_AUC} | 88.44 % |",
        "",
        f"Target for the demo model: a held-out patch AUC in {low} - {high}: "
        f"{'met' if in_range else 'NOT met; rerun with a harder or easier --difficulty'}.",
        "",
        "## Method defaults, chosen on the validation patients",
        "",
        f"`{chosen['label']}` ({chosen['run']}): the card's defaults are now "
        f"`{json.dumps({k: v for k, v in chosen['defaults'].items() if k != 'chosen_by'})}`. "
        f"Rule: {chosen['rule']}.",
        "",
        _table_of(val_path),
        "",
        "## Table 2 (test split)",
        "",
        f"The card's defaults are the row **{chosen['label']}**: test AUC {row['auc']:.3f} and Dice "
        f"{row['best_dice']:.3f} (threshold {row['best_threshold']:g} on the test patients; the card uses "
        f"the validation threshold {chosen['defaults']['threshold']:g}).",
        "",
        _table_of(test_path),
        "",
        "## What the test split says (paired bootstrap)",
        "",
        *_comparisons(val, test, test_path.parent / "histograms.npz"),
        "",
        "## Time per mosaic (test split)",
        "",
        f"Device: {test['timings']['device']}.",
        "",
        *_timing_rows(test),
        "",
    ]
    return "\n".join(lines)
