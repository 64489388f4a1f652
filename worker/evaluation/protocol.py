"""The paper's evaluation protocol over one split of annotated mosaics (D'Alonzo et al. 2021, "Results"):
what is measured, the plan of passes, and the result that holds every measurement.

Patch level: the split's weakly labelled patches through the network, scored as in the paper (ROC, AUC,
accuracy at 0.5). Segmentation: for every (CAM method, step, sigma) of a sweep, each mosaic's heat map is
reduced to score histograms over its labelled pixels (:mod:`models.metrics.roc`); pooled and per-mosaic
AUC, the Dice sweep and the bootstrap follow from those in :mod:`worker.evaluation.report`.

Sigma changes only the stitching weights, so each (method, step) pass runs its windows once and stitches
them for every sigma (:mod:`worker.evaluation.sweep`): a nine-sigma sweep costs one network pass plus nine
cheap accumulations. :mod:`worker.evaluation.runner` runs the plan.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.errors import InvalidParameter
from models.method import PLAIN_AVERAGING, Sigma
from models.metrics.roc import DEFAULT_BINS, ScoreHistogram
from worker.engine.dense_tiles import STRIDE as DENSE_STRIDE
from worker.evaluation.data import EvalSplit, PatchScores
from worker.io.checkpoint import LoadedModel
from worker.params import CamMethod, MethodParams, Mode, Precision

DEFAULT_STEPS = (25, 50, 100)
DEFAULT_SIGMA_UNITS: tuple[float | None, ...] = (None, 1.0, 2.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)
"""The paper's sigmas, in units of the network's output stride (32 px for EfficientNet); None = plain mean."""
PREVIEW_SIDE = 512
"""Longest side of the heat maps kept for the per-mosaic figures."""


@dataclass(frozen=True, kw_only=True)
class EvalParams:
    """What to evaluate. Sigmas are in units of the output stride; ScoreCAM speed options apply to every
    ScoreCAM row (both off: exact), and ``scorecam_steps`` (None: ``steps``) are the steps of its rows;
    ``bootstrap`` resamples (0: none)."""

    cams: tuple[CamMethod, ...] = ("cam", "scorecam")
    steps: tuple[int, ...] = DEFAULT_STEPS
    sigma_units: tuple[float | None, ...] = DEFAULT_SIGMA_UNITS
    modes: tuple[Mode, ...] = ("exact",)
    bootstrap: int = 1000
    seed: int = 0
    precision: Precision = "fp32"
    scorecam_top_k: int | None = None
    scorecam_skip_below: float = 0.0
    scorecam_steps: tuple[int, ...] | None = None
    n_bins: int = DEFAULT_BINS
    panels: bool = True

    def steps_of(self, cam: CamMethod) -> tuple[int, ...]:
        """The exact steps swept for ``cam``."""
        if cam == "scorecam" and self.scorecam_steps is not None:
            return tuple(s for s in self.steps if s in self.scorecam_steps)
        return self.steps

    def __post_init__(self) -> None:
        for name in ("cams", "steps", "sigma_units", "modes"):
            values = getattr(self, name)
            if not values:
                raise InvalidParameter(f"{name} must not be empty")
            if len(set(values)) != len(values):
                raise InvalidParameter(f"{name} has duplicates: {list(values)}")
        if any(step < 1 for step in self.steps):
            raise InvalidParameter(f"steps must be >= 1 px, got {list(self.steps)}")
        if self.scorecam_steps is not None:
            if "scorecam" not in self.cams:
                raise InvalidParameter("scorecam_steps needs 'scorecam' among the methods")
            if not set(self.scorecam_steps) <= set(self.steps) or not self.scorecam_steps:
                raise InvalidParameter(
                    f"scorecam_steps must be some of the steps {list(self.steps)}, "
                    f"got {list(self.scorecam_steps)}"
                )
        if any(s is not None and not s > 0 for s in self.sigma_units):
            raise InvalidParameter(f"sigmas must be > 0 or none, got {list(self.sigma_units)}")
        if self.n_bins < 1 or self.n_bins % 50:
            raise InvalidParameter(
                f"n_bins must be a multiple of 50 (Dice thresholds 0.02 apart), got {self.n_bins}"
            )
        if self.bootstrap < 0:
            raise InvalidParameter(f"bootstrap must be >= 0 resamples, got {self.bootstrap}")
        if "dense" in self.modes and "cam" not in self.cams:
            raise InvalidParameter("dense mode computes classic CAM only; add 'cam' to the methods")
        # Fails early on the engine's own checks (methods, precision, ScoreCAM options).
        for cam in self.cams:
            MethodParams.parse(
                {
                    "cam": cam,
                    "precision": self.precision,
                    "scorecam_top_k": self.scorecam_top_k,
                    "scorecam_skip_below": self.scorecam_skip_below,
                }
            )


@dataclass(frozen=True)
class RunConfig:
    """One row of Table 2: a CAM method, how windows are placed, and the stitching sigma."""

    cam: CamMethod
    mode: Mode
    step: int
    sigma_units: float | None
    sigma_px: float | None

    @property
    def method(self) -> str:
        """``cam``, ``scorecam`` or ``cam-dense``: one curve, one set of panels."""
        return self.cam if self.mode == "exact" else f"{self.cam}-{self.mode}"

    @property
    def key(self) -> str:
        sigma = "none" if self.sigma_units is None else f"{self.sigma_units:g}"
        return f"{self.cam}/{self.mode}/step{self.step}/sigma{sigma}"


@dataclass(frozen=True)
class PassSpec:
    """Windows computed once (one method, one step) and stitched for every sigma of ``configs``."""

    cam: CamMethod
    mode: Mode
    step: int
    configs: tuple[RunConfig, ...]

    @property
    def sigmas_px(self) -> list[Sigma]:
        """Each config's sigma as the engine takes it (the paper's no-Gaussian row is plain averaging)."""
        return [PLAIN_AVERAGING if c.sigma_px is None else c.sigma_px for c in self.configs]


def plan_passes(params: EvalParams, stride: int) -> list[PassSpec]:
    """Exact passes for every (method, step), then one dense CAM pass (step = the stride) if asked."""
    out = []
    for mode in params.modes:
        cams = params.cams if mode == "exact" else ("cam",)
        for cam in cams:
            for step in params.steps_of(cam) if mode == "exact" else (DENSE_STRIDE,):
                configs = tuple(
                    RunConfig(cam, mode, step, u, None if u is None else u * stride)
                    for u in params.sigma_units
                )
                out.append(PassSpec(cam, mode, step, configs))
    return out


@dataclass(frozen=True)
class PassRecord:
    """What one pass over one mosaic cost."""

    cam: str
    mode: str
    step: int
    mosaic: str
    windows: int
    skipped: int
    seconds: float
    network_s: float
    stitch_s: float
    sigmas: int
    scorecam: dict[str, Any] | None = None


@dataclass
class Panels:
    """Heat previews of the best configuration of one method, for the per-mosaic figures."""

    key: str
    score: tuple[float, float]
    heat: dict[str, np.ndarray]


@dataclass
class EvalResult:
    """Everything measured; :mod:`worker.evaluation.report` turns it into numbers, tables and figures."""

    params: EvalParams
    split: EvalSplit
    model: LoadedModel
    stride: int
    device: str
    passes: list[PassSpec]
    histograms: dict[str, list[ScoreHistogram]]
    """Per configuration key: one histogram per mosaic, in ``split.mosaics`` order."""
    records: list[PassRecord] = field(default_factory=list)
    patches: PatchScores | None = None
    panels: dict[str, Panels] = field(default_factory=dict)
    label_previews: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: float = 0.0
    reused: list[str] = field(default_factory=list)
    """Results a previous run into the same folder had kept (``pass/mosaic`` names, ``patches``)."""

    @property
    def configs(self) -> list[RunConfig]:
        return [c for p in self.passes for c in p.configs]


def pooled_score(hists: Sequence[ScoreHistogram]) -> tuple[float, float]:
    """(AUC, best Dice) of the pooled histogram, -inf where undefined: how 'best' rows are chosen."""
    from models.metrics.dice import dice_sweep

    pooled = sum(hists[1:], hists[0].copy())
    auc = pooled.auc()
    best = dice_sweep(pooled).best_dice
    return (-math.inf if auc is None else auc, -math.inf if best is None else best)
