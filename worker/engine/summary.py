"""``summary.json``: what a segmentation computed, from what, with which values, and how long it took."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from worker.engine.params import SegmentParams
from worker.engine.run import WindowStats
from worker.engine.windows import WindowGrid
from worker.io.checkpoint import LoadedModel
from worker.io.export import ExportResult
from worker.io.mosaic import Mosaic
from worker.provenance import package_version


@dataclass(frozen=True, kw_only=True)
class RunFacts:
    """What one run used besides its parameters: the input, the grid and where the network ran."""

    source_name: str
    sha256: str
    mosaic: Mosaic
    grid: WindowGrid
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
    card, header, grid = model.card, facts.mosaic.header, facts.grid
    mm2_per_px = (card.pixel_size_um * 1e-3) ** 2
    return {
        "input": {
            "name": facts.source_name,
            "sha256": facts.sha256,
            "format": header.format,
            "width": header.width,
            "height": header.height,
            "bands": header.bands,
            "bit_depth": header.bit_depth,
            "notes": facts.mosaic.notes,
        },
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
        },
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
        "model": {"name": card.name, "arch": card.arch, "weights_sha256": model.weights_sha256},
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
        "version": package_version(),
    }
