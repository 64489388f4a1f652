"""ScoreCAM as the engine's per-batch map function, with the CAM path's own normalisation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from models.cam.classic import WindowMaps, minmax_per_window
from models.cam.scorecam import ScoreCamCounts, ScoreCamParams, scorecam
from worker.io.checkpoint import LoadedModel


@dataclass
class ScoreCamTally:
    """What ScoreCAM did over a whole mosaic, for summary.json."""

    params: ScoreCamParams
    counts: ScoreCamCounts = field(default_factory=ScoreCamCounts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "top_k": self.params.top_k,
            "rank": self.params.rank,
            "skip_below": self.params.skip_below,
            "chunk": self.params.chunk,
            "exact": self.params.top_k is None and self.params.skip_below == 0,
            **self.counts.as_dict(),
        }


def scorecam_window_maps(
    model: LoadedModel,
    *,
    dtype: torch.dtype,
    tally: ScoreCamTally,
    pad: Callable[[int], int] | None = None,
) -> Callable[[torch.Tensor], WindowMaps]:
    """A function from a normalised window batch to (p, normalised ScoreCAM map at window size); ``pad``
    fixes the batch dimension of every network call (:func:`models.cam.scorecam.scorecam`)."""
    net = model.net
    device = model.device

    def run(x: torch.Tensor) -> WindowMaps:
        if dtype != torch.float32:
            with torch.autocast(device_type=device.type, dtype=dtype):
                result = scorecam(net, x, params=tally.params, pad=pad)
        else:
            result = scorecam(net, x, params=tally.params, pad=pad)
        tally.counts = tally.counts + result.counts
        return WindowMaps(prob=result.probs.float(), maps=minmax_per_window(result.maps.float()))

    return run
