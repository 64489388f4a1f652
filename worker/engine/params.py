"""Option bundles and progress reports of the mosaic engine. Imports no torch."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from models.errors import InvalidParameter

CamMethod = Literal["cam", "scorecam"]
Precision = Literal["fp32", "bf16", "fp16"]
DeviceChoice = Literal["auto", "cpu", "cuda"]
Mode = Literal["exact", "dense"]

DEFAULT_INPUT_PIXEL_SIZE_UM = 0.5
"""VivaScope 1500/3000 mosaics are about 0.5 um/px."""


@dataclass(frozen=True, kw_only=True)
class SegmentParams:
    """Everything that changes what the engine computes (and so belongs in a result's identity)."""

    step: int = 25
    sigma: float | None = None
    cam: CamMethod = "cam"
    threshold: float | None = None
    pixel_size_um: float = DEFAULT_INPUT_PIXEL_SIZE_UM
    downsample: int | None = None
    precision: Precision = "fp32"
    mode: Mode = "exact"
    scorecam_top_k: int | None = None
    scorecam_skip_below: float = 0.0

    def __post_init__(self) -> None:
        if self.step < 1:
            raise InvalidParameter(f"step must be >= 1, got {self.step}")
        if self.sigma is not None and not self.sigma > 0:
            raise InvalidParameter(f"sigma must be > 0 px or none, got {self.sigma}")
        if self.cam not in ("cam", "scorecam"):
            raise InvalidParameter(f"cam must be 'cam' or 'scorecam', got {self.cam!r}")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise InvalidParameter(f"threshold must be in [0, 1], got {self.threshold}")
        if not self.pixel_size_um > 0:
            raise InvalidParameter(f"pixel size must be > 0 um, got {self.pixel_size_um}")
        if self.downsample is not None and not 1 <= self.downsample <= 64:
            raise InvalidParameter(f"downsample must be in 1..64, got {self.downsample}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise InvalidParameter(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.scorecam_top_k is not None and self.scorecam_top_k < 1:
            raise InvalidParameter(f"scorecam top-k must be >= 1, got {self.scorecam_top_k}")
        if not 0 <= self.scorecam_skip_below < 1:
            raise InvalidParameter(f"scorecam skip-below must be in [0, 1), got {self.scorecam_skip_below}")
        if self.mode not in ("exact", "dense"):
            raise InvalidParameter(f"mode must be 'exact' or 'dense', got {self.mode!r}")

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> SegmentParams:
        """Parameters from any mapping that uses the engine's field names (a request, parsed command-line
        arguments, a job's kwargs); other keys are ignored, and ``None`` stands for "not given" where the
        field's default is not itself ``None``."""
        given: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in values and (values[f.name] is not None or f.default is None):
                given[f.name] = values[f.name]
        return cls(**given)

    def downsample_for(self, model_pixel_size_um: float) -> int:
        """The integer factor that brings the input to the model's processing pixel size."""
        if self.downsample is not None:
            return self.downsample
        return max(1, round(model_pixel_size_um / self.pixel_size_um))


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How (not what) the engine computes: device placement, batch and memory budget."""

    device: DeviceChoice = "auto"
    batch_size: int | None = None
    memory_budget_bytes: int = 128 * 1024**2
    max_pixels: int = 2 * 12000 * 12000
    workdir: str | None = None


@dataclass(frozen=True)
class Progress:
    """One progress report: the stage, the units done of the total and an ETA when known."""

    stage: str
    done: int
    total: int
    eta_s: float | None = None


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]
