"""``summary.json``: what a segmentation computed, from what, with which values, and how long it took."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from worker.engine.network_pass import WindowStats
from worker.engine.windows import WindowGrid
from worker.io.checkpoint import LoadedModel
from worker.io.export import ExportResult
from worker.io.mosaic import Mosaic
from worker.params import DENSE_IDENTITY, SegmentParams
from worker.plan import Plan
from worker.provenance import package_version


@dataclass(frozen=True, kw_only=True)
class RunFacts:
    """What one run used besides its parameters: the input, the grid and where the network ran."""

    source_name: str
    sha256: str
    mosaic: Mosaic
    grid: WindowGrid
    plan: Plan
    downsample: int
    threshold: float
    batch_size: int
    device: torch.device


def build_summary(
    facts: RunFacts,
    *,
    model: LoadedModel,
    params: SegmentParams,
    stats: WindowStats,
    export: ExportResult,
    covered: int,
    timings: dict[str, float],
) -> dict[str, Any]:
    """The summary of one run; areas are in mm^2 at the model's processing pixel size."""
    card, grid = model.card, facts.grid
    mm2_per_px = (card.pixel_size_um * 1e-3) ** 2
    return {
        "input": _input_section(facts),
        "processing": {
            "width": grid.width,
            "height": grid.height,
            "downsample": facts.downsample,
            "pixel_size_um": card.pixel_size_um,
        },
        "windows": {
            "total": stats.total,
            "skipped": stats.skipped,
            "computed": stats.total - stats.skipped,
            "window": card.window,
            "batch_size": facts.batch_size,
            "final_batch_size": stats.batch_size or facts.batch_size,
            "oom_retries": stats.oom_retries,
        },
        "compiled": model.compiled.as_dict() if stats.compiled and model.compiled is not None else None,
        "parallel": {"bands": stats.parts} if stats.parts else None,
        "method": method_provenance(params, facts.threshold),
        "step": grid.step,
        "sigma": params.sigma,
        "cam": params.cam,
        "mode": params.mode,
        "threshold": facts.threshold,
        "precision": params.precision,
        "device": str(facts.device),
        "aspecific_area_fraction": export.positive_pixels / covered if covered else 0.0,
        "aspecific_area_mm2": export.positive_pixels * mm2_per_px,
        "scanned_area_mm2": covered * mm2_per_px,
        "max_window_probability": stats.max_prob,
        "scorecam": stats.scorecam.as_dict() if stats.scorecam is not None else None,
        "regions": export.regions,
        "layers": export.layers,
        "dicom": {"segmentations": export.dicom} if export.dicom else None,
        "model": {"name": card.name, "arch": card.arch, "weights_sha256": model.weights_sha256},
        "intended_use": card.intended_use or None,
        "notes": fitness_notes(facts, stats, card.intended_use),
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "version": package_version(),
    }


def _input_section(facts: RunFacts) -> dict[str, Any]:
    header = facts.mosaic.header
    return {
        "name": facts.source_name,
        "sha256": facts.sha256,
        "format": header.format,
        "width": header.width,
        "height": header.height,
        "bands": header.bands,
        "bit_depth": header.bit_depth,
        "notes": facts.mosaic.notes,
        "pixel_size_um": facts.plan.input_pixel_size_um,
        "pixel_size_source": facts.plan.pixel_size_source,
    }


def method_provenance(params: SegmentParams, threshold: float) -> dict[str, dict[str, Any]]:
    """Each method value that ran and where it came from: the model card's defaults or the request."""
    values = {"cam": params.cam, "step": params.step, "sigma": params.sigma, "threshold": threshold}
    method = {
        key: {"value": value, "source": "card" if key in params.defaults_from else "request"}
        for key, value in values.items()
    }
    if params.mode == "dense":
        method.update({key: {"value": value, "source": "engine"} for key, value in DENSE_IDENTITY.items()})
    return method


FEW_WINDOWS = 4
"""Below this many computed windows a heatmap is mostly one window's CAM, and the summary says so."""


def fitness_notes(facts: RunFacts, stats: WindowStats, intended_use: str) -> list[str]:
    """What a reader must know before reading anything into this result."""
    notes = []
    if intended_use:
        notes.append(f"model's intended use: {intended_use}")
    if facts.plan.pixel_size_source == "assumed":
        notes.append(
            f"the file records no pixel size; {facts.plan.input_pixel_size_um:g} um/px was assumed "
            f"(downsample factor {facts.downsample})"
        )
    computed = stats.total - stats.skipped
    if computed < FEW_WINDOWS:
        plural = "" if computed == 1 else "s"
        notes.append(
            f"computed from {computed} window{plural} of {facts.grid.window} px only: the heatmap is little "
            f"more than the class activation map of th{'at' if computed == 1 else 'ose'} window{plural}, "
            "not a sliding-window segmentation"
        )
    return notes
