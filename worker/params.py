"""The method's parameters: one schema from the HTTP body, the command line, a job's keyword arguments or a
bench config to the engine. Imports no torch (the API validates requests with it).

``MethodParams`` is what a door may say: the method fields (cam, step, sigma, threshold) left out take the
model card's defaults, ``parallel`` left out the deployment's. ``SegmentParams`` derives from it with every
value resolved, as the engine runs it. Each field has one name, one set of constraints and one validator
(the shared types of :mod:`models.method` and those below); the one check that needs the model's window
(``step`` at most the window) is ``worker.plan.plan_mosaic``'s. A refusal reads ``field: reason`` at every
door (:func:`invalid`, :func:`invalid_from`), as the API's 422 body says it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from models.card import MethodDefaults
from models.errors import InvalidParameter
from models.method import PLAIN_AVERAGING, CamMethod, Sigma, Step, Threshold

__all__ = [
    "DEFAULT_INPUT_PIXEL_SIZE_UM",
    "DENSE_IDENTITY",
    "DENSE_PROB_STEP",
    "DENSE_TILE_CELLS",
    "MAX_DOWNSAMPLE",
    "MAX_PARALLEL",
    "METHOD_FIELDS",
    "PLAIN_AVERAGING",
    "CamMethod",
    "MethodParams",
    "Mode",
    "Precision",
    "SegmentParams",
    "invalid",
    "invalid_from",
]

Precision = Literal["fp32", "bf16", "fp16"]

DENSE_TILE_CELLS: Final = 48
"""Dense mode: the core of a tile in cells of the output stride (48 x 32 px; with its halo, 2048 px): a
phantom of 1750 px is one tile, a 12k mosaic's processing image four (:mod:`worker.engine.dense_tiles`)."""
DENSE_PROB_STEP: Final = 128
"""Dense mode: the step in pixels of the isolated window crops whose logits correct the dense logits; the
correction, interpolated, gives every window's probability (:mod:`worker.engine.dense_tiles`)."""
DENSE_IDENTITY: Final[dict[str, Any]] = {
    "dense_tile_cells": DENSE_TILE_CELLS,
    "dense_prob_step": DENSE_PROB_STEP,
    "dense_prob": "crop offsets",
}
"""The dense engine's settings that change a dense result: part of its identity and provenance."""
Mode = Literal["exact", "dense"]

METHOD_FIELDS: Final = ("cam", "step", "sigma", "threshold")
"""The fields whose value, when a door does not give it, is the model card's default."""

MAX_DOWNSAMPLE: Final = 64
DEFAULT_INPUT_PIXEL_SIZE_UM: Final = 0.5
"""VivaScope 1500/3000 mosaics are about 0.5 um/px."""
MAX_PARALLEL: Final = 64

PixelSize = Annotated[StrictFloat, Field(gt=0)]
Downsample = Annotated[StrictInt, Field(ge=1, le=MAX_DOWNSAMPLE)]
TopK = Annotated[StrictInt, Field(ge=1)]
SkipBelow = Annotated[StrictFloat, Field(ge=0, lt=1)]
Parallel = Annotated[StrictInt, Field(ge=1, le=MAX_PARALLEL)]


def invalid(field: str, reason: str) -> InvalidParameter:
    """A refused parameter in the one form every door gives it: ``field: reason``."""
    return InvalidParameter(f"{field}: {reason}", field=field)


def invalid_from(exc: ValidationError) -> InvalidParameter:
    """The first error of a validation of these models, as :func:`invalid` says it."""
    first = exc.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "parameters"
    return invalid(field, first["msg"])


class MethodParams(BaseModel):
    """The method's parameters as a request, the command line or a bench config gives them."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    cam: CamMethod | None = Field(
        default=None,
        description="cam (classic, one pass) or scorecam (a pass per channel); default: the card's.",
    )
    step: Step | None = Field(
        default=None, description="Window step in processing pixels, at most the window; default: the card's."
    )
    sigma: Sigma | None = Field(
        default=None,
        description='Gaussian stitching sigma in processing pixels, or "none" for plain averaging; '
        "default: the card's.",
    )
    threshold: Threshold | None = Field(
        default=None, description="Mask threshold (0..1); default: the card's."
    )
    pixel_size_um: PixelSize | None = Field(
        default=None,
        description="Input pixel size in um; default: what the file records, else "
        f"{DEFAULT_INPUT_PIXEL_SIZE_UM} (assumed, and the summary says so). Sets the downsample factor.",
    )
    downsample: Downsample | None = Field(
        default=None, description="Overrides the factor from pixel_size_um."
    )
    precision: Precision = Field(default="fp32", description="The network's precision.")
    mode: Mode = Field(
        default="exact",
        description="exact: the paper's sliding windows; dense: maps from one pass (windows every 32 px), "
        f"probabilities corrected by crops every {DENSE_PROB_STEP} px.",
    )
    scorecam_top_k: TopK | None = Field(
        default=None,
        description="ScoreCAM: score only the k strongest channels per window; default: all (exact).",
    )
    scorecam_skip_below: SkipBelow = Field(
        default=0.0, description="ScoreCAM: a zero map for windows whose probability is below this."
    )
    parallel: Parallel | None = Field(
        default=None,
        description="Share the mosaic out over this many workers in bands of window rows, merged into the "
        "same result (equal within 1e-6); default RCMSEG_DEFAULT_PARALLEL, else 1. Not part of the result's "
        "identity.",
    )

    @classmethod
    def parse(cls, values: Mapping[str, Any]) -> MethodParams:
        """The parameters of the keys of ``values`` that name them (others ignored), refusing as every door
        does; values that are ``None`` are not given."""
        given = {k: v for k, v in values.items() if k in MethodParams.model_fields and v is not None}
        try:
            return MethodParams.model_validate(given)
        except ValidationError as exc:
            raise invalid_from(exc) from None

    @classmethod
    def parse_text(cls, name: str, text: str) -> Any:
        """One parameter from command-line text, validated as a request's would be."""
        try:
            return getattr(MethodParams.model_validate_strings({name: text}), name)
        except ValidationError as exc:
            raise invalid_from(exc) from None

    def given(self) -> dict[str, Any]:
        """The values this door gave (the method parameters only)."""
        return {
            k: v for k, v in self.model_dump(include=set(MethodParams.model_fields)).items() if v is not None
        }

    def resolve(self, defaults: MethodDefaults, *, parallel: int = 1) -> SegmentParams:
        """Every value the engine needs: the card's ``defaults`` for the method fields not given (named in
        ``defaults_from``), ``parallel`` where it was not given."""
        given = self.given()
        from_card = [name for name in METHOD_FIELDS if name not in given]
        values = {"parallel": parallel, **defaults.model_dump(include=set(from_card)), **given}
        try:
            return SegmentParams.model_validate({**values, "defaults_from": tuple(from_card)})
        except ValidationError as exc:
            raise invalid_from(exc) from None


class SegmentParams(MethodParams):
    """Everything that changes what the engine computes, resolved (plus ``parallel``, how it is shared out).

    The defaults here serve code that runs the engine directly (tests, benchmarks, the evaluation); a
    request, the command line and a bench config take the card's through ``MethodParams.resolve``. A
    ``threshold`` of ``None`` is the card's (``ModelCard.method_defaults()``). ``defaults_from`` names the
    fields that took the card's default (provenance, not identity).
    """

    cam: CamMethod = "cam"
    step: Step = 25
    sigma: Sigma = PLAIN_AVERAGING
    parallel: Parallel = 1
    defaults_from: tuple[str, ...] = ()

    @classmethod
    def from_job(cls, values: Mapping[str, Any]) -> SegmentParams:
        """The parameters a job's keyword arguments carry (``SegmentParams.model_dump()``).

        A job queued by an earlier version wrote plain averaging as a null sigma: read as ``"none"``."""
        if "sigma" in values and values["sigma"] is None:
            values = {**values, "sigma": PLAIN_AVERAGING}
        try:
            return SegmentParams.model_validate(values)
        except ValidationError as exc:
            raise invalid_from(exc) from None

    def identity(self) -> dict[str, Any]:
        """The fields that change what is computed (provenance and sharing out left out), for a result's
        key."""
        fields = self.model_dump(exclude={"defaults_from", "parallel"})
        return {**fields, **DENSE_IDENTITY} if self.mode == "dense" else fields
