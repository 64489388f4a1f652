"""How (not what) the engine computes: device placement, batch and memory budget."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

DeviceChoice = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How (not what) the engine computes: device placement, batch and memory budget."""

    device: DeviceChoice = "auto"
    batch_size: int | None = None
    memory_budget_bytes: int = 128 * 1024**2
    max_pixels: int = 2 * 12000 * 12000
    workdir: str | None = None
