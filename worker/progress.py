"""Progress reports and cancel checks, the callbacks every long stage takes. Imports no torch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Progress:
    """One progress report: the stage, the units done of the total and an ETA when known."""

    stage: str
    done: int
    total: int
    eta_s: float | None = None


ProgressFn = Callable[[Progress], None]
CancelFn = Callable[[], bool]
