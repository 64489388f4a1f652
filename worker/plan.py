"""A run's plan: what a mosaic of a given size becomes under some parameters, checked before any pixel
is read. Imports no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from models.errors import InvalidParameter
from worker.params import DEFAULT_INPUT_PIXEL_SIZE_UM, MAX_DOWNSAMPLE, SegmentParams, invalid

__all__ = ["DEFAULT_INPUT_PIXEL_SIZE_UM", "Plan", "plan_for", "plan_mosaic"]


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
    """The one validation of a run that needs the model and the mosaic, shared by every entry point
    (command line, API, engine): the step fits the model's window, the downsample factor derived from the
    pixel sizes is within bounds, and the mosaic has at least one pixel at processing resolution (so at
    least one window)."""
    if params.step > window:
        raise invalid("step", f"must be at most the model's window ({window} px), got {params.step}")
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
            raise invalid(
                "pixel_size_um",
                f"{size:.4g} um/px needs a downsample factor above {MAX_DOWNSAMPLE} to reach the model's "
                f"{model_pixel_size_um:g} um/px",
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
