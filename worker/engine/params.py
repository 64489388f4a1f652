"""Option bundles and progress reports of the mosaic engine. Imports no torch."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Protocol

from models.errors import InvalidParameter

CamMethod = Literal["cam", "scorecam"]
Precision = Literal["fp32", "bf16", "fp16"]
DeviceChoice = Literal["auto", "cpu", "cuda"]
Mode = Literal["exact", "dense"]

DEFAULT_INPUT_PIXEL_SIZE_UM = 0.5
"""VivaScope 1500/3000 mosaics are about 0.5 um/px."""


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


class MosaicSize(Protocol):
    """A mosaic's header as far as a plan needs it (``worker.io.mosaic.MosaicHeader``, a stored record)."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def pixel_size_um(self) -> float | None: ...


class ModelGeometry(Protocol):
    """A model card as far as a plan needs it (``models.card.ModelCard``)."""

    @property
    def window(self) -> int: ...
    @property
    def pixel_size_um(self) -> float: ...


PixelSizeSource = Literal["request", "file", "assumed"]


@dataclass(frozen=True, kw_only=True)
class Plan:
    """What a mosaic of a given size becomes under some parameters, checked before any pixel is read."""

    input_pixel_size_um: float
    pixel_size_source: PixelSizeSource
    downsample: int
    width: int
    height: int
    """The processing image's size."""


def plan_mosaic(
    params: SegmentParams,
    *,
    width: int,
    height: int,
    file_pixel_size_um: float | None,
    window: int,
    model_pixel_size_um: float,
) -> Plan:
    """The one validation of a run that every entry point shares (command line, API, engine): the step fits
    the window, the downsample factor derived from the pixel sizes is within bounds, and the mosaic has at
    least one pixel at processing resolution (so at least one window)."""
    if params.step > window:
        raise InvalidParameter(f"step must be at most the model's window ({window} px), got {params.step}")
    source: PixelSizeSource
    if params.pixel_size_um is not None:
        size, source = params.pixel_size_um, "request"
    elif file_pixel_size_um is not None:
        size, source = file_pixel_size_um, "file"
    else:
        size, source = DEFAULT_INPUT_PIXEL_SIZE_UM, "assumed"
    if params.downsample is not None:
        factor = params.downsample
    else:
        ratio = model_pixel_size_um / size
        if not ratio <= MAX_DOWNSAMPLE + 0.5:
            raise InvalidParameter(
                f"pixel_size_um {size:.4g} um/px needs a downsample factor above {MAX_DOWNSAMPLE} to reach "
                f"the model's {model_pixel_size_um:g} um/px"
            )
        factor = max(1, round(ratio))
    w, h = width // factor, height // factor
    if w < 1 or h < 1:
        raise InvalidParameter(
            f"the mosaic ({width} x {height} px) is smaller than one processing pixel at downsample factor "
            f"{factor}, so no {window} px window fits; give a smaller downsample or pixel size",
            field="mosaic",
        )
    return Plan(input_pixel_size_um=size, pixel_size_source=source, downsample=factor, width=w, height=h)


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


def plan_for(params: SegmentParams, mosaic: MosaicSize, card: ModelGeometry) -> Plan:
    """``plan_mosaic`` for a mosaic header and a model card."""
    return plan_mosaic(
        params,
        width=mosaic.width,
        height=mosaic.height,
        file_pixel_size_um=mosaic.pixel_size_um,
        window=card.window,
        model_pixel_size_um=card.pixel_size_um,
    )
