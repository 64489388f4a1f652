"""The method's parameters: everything that changes what the engine computes. Imports no torch."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Protocol

from models.errors import InvalidParameter

CamMethod = Literal["cam", "scorecam"]
Precision = Literal["fp32", "bf16", "fp16"]
Mode = Literal["exact", "dense"]

METHOD_FIELDS = ("cam", "step", "sigma", "threshold")
"""The fields whose value, when a request does not give it, is the model card's default."""

PLAIN_AVERAGING = "none"
"""The sigma a request gives for plain averaging (no Gaussian weights)."""

MAX_DOWNSAMPLE = 64


@dataclass(frozen=True, kw_only=True)
class SegmentParams:
    """Everything that changes what the engine computes (and so belongs in a result's identity).

    ``sigma`` is the Gaussian's in processing pixels, ``None`` for plain averaging; ``pixel_size_um`` is
    the input's, ``None`` to read it from the file (0.5 um/px assumed where the file has none).
    ``defaults_from`` names the fields that took the model card's default (provenance, not identity).
    """

    step: int = 25
    sigma: float | None = None
    cam: CamMethod = "cam"
    threshold: float | None = None
    pixel_size_um: float | None = None
    downsample: int | None = None
    precision: Precision = "fp32"
    mode: Mode = "exact"
    scorecam_top_k: int | None = None
    scorecam_skip_below: float = 0.0
    defaults_from: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_number("step", self.step, integer=True)
        if self.step < 1:
            raise InvalidParameter(f"step must be >= 1, got {self.step}")
        if self.sigma is not None and not (_check_number("sigma", self.sigma) and self.sigma > 0):
            raise InvalidParameter(f"sigma must be > 0 px or none, got {self.sigma}")
        if self.cam not in ("cam", "scorecam"):
            raise InvalidParameter(f"cam must be 'cam' or 'scorecam', got {self.cam!r}")
        if self.threshold is not None and not (
            _check_number("threshold", self.threshold) and 0 <= self.threshold <= 1
        ):
            raise InvalidParameter(f"threshold must be in [0, 1], got {self.threshold}")
        if self.pixel_size_um is not None and not (
            _check_number("pixel_size_um", self.pixel_size_um) and self.pixel_size_um > 0
        ):
            raise InvalidParameter(f"pixel_size_um must be > 0 um, got {self.pixel_size_um}")
        if self.downsample is not None and not (
            _check_number("downsample", self.downsample, integer=True)
            and 1 <= self.downsample <= MAX_DOWNSAMPLE
        ):
            raise InvalidParameter(f"downsample must be in 1..{MAX_DOWNSAMPLE}, got {self.downsample}")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise InvalidParameter(f"precision must be fp32, bf16 or fp16, got {self.precision!r}")
        if self.scorecam_top_k is not None and self.scorecam_top_k < 1:
            raise InvalidParameter(f"scorecam top-k must be >= 1, got {self.scorecam_top_k}")
        if not 0 <= self.scorecam_skip_below < 1:
            raise InvalidParameter(f"scorecam skip-below must be in [0, 1), got {self.scorecam_skip_below}")
        if self.mode not in ("exact", "dense"):
            raise InvalidParameter(f"mode must be 'exact' or 'dense', got {self.mode!r}")

    @classmethod
    def from_values(
        cls, values: Mapping[str, Any], *, defaults: MethodDefaults | None = None
    ) -> SegmentParams:
        """Parameters from any mapping that uses the engine's field names (a request, parsed command-line
        arguments, a job's kwargs); other keys are ignored.

        ``None`` (or a missing key) means "not given": cam, step, sigma and threshold then take
        ``defaults`` (the model card's) and are named in ``defaults_from``; other fields take the engine's
        defaults. A sigma of ``"none"`` asks for plain averaging explicitly.
        """
        given: dict[str, Any] = {}
        from_card = list(values.get("defaults_from") or ())
        for f in fields(cls):
            if f.name == "defaults_from":
                continue
            value = values.get(f.name)
            if f.name == "sigma" and value == PLAIN_AVERAGING:
                given["sigma"] = None
            elif value is not None:
                given[f.name] = value
            elif defaults is not None and f.name in METHOD_FIELDS:
                given[f.name] = defaults.value_of(f.name)
                from_card.append(f.name)
        return cls(**given, defaults_from=tuple(dict.fromkeys(from_card)))

    def identity(self) -> dict[str, Any]:
        """The fields that change what is computed (provenance left out), for a result's key."""
        values = asdict(self)
        values.pop("defaults_from")
        return values


def _check_number(name: str, value: object, *, integer: bool = False) -> bool:
    """Refuse booleans posing as numbers and non-finite floats, naming the field."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameter(f"{name} must be a number, got {value!r}")
    if integer and not isinstance(value, int):
        raise InvalidParameter(f"{name} must be a whole number, got {value!r}")
    if not math.isfinite(value):
        raise InvalidParameter(f"{name} must be a finite number, got {value}")
    return True


class MethodDefaults(Protocol):
    """The model card's defaults of its method (``models.card.MethodDefaults``)."""

    def value_of(self, name: str) -> Any: ...
