"""The model card: what a checkpoint folder's ``card.json`` must say about its network."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator

from models.errors import InvalidModel
from models.method import PLAIN_AVERAGING, CamMethod, Sigma, Step, Threshold

PAPER_SIGMA_WINDOWS = 5 / 8
"""The paper's best CAM rows stitch with sigma = 5 x the output stride of 32 px at 256 px windows (160 px)."""


class MethodDefaults(BaseModel):
    """The defaults of a model's method: what a request that does not say gets (the one source of the cam,
    step, sigma and threshold a run takes when it is not given them).

    ``sigma`` is in processing pixels, ``"none"`` for plain averaging. ``chosen_by`` says how they were
    chosen (for the shipped model: the command of its validation run). Cards written before the field was
    named ``sigma`` say ``sigma_px`` (``null`` for plain averaging), and are read as they are.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    cam: CamMethod = "cam"
    step: Step = 25
    sigma: Sigma = Field(validation_alias=AliasChoices("sigma", "sigma_px"))
    threshold: Threshold
    chosen_by: str = ""

    @field_validator("sigma", mode="before")
    @classmethod
    def _older_cards(cls, value: object) -> object:
        return PLAIN_AVERAGING if value is None else value


class ModelCard(BaseModel):
    """Metadata that travels with ``model.safetensors``.

    ``mean``/``std`` normalise intensities scaled to [0, 1]; ``pixel_size_um`` is the processing pixel
    size the network was trained at (2.0 for the paper's 4x-downsampled mosaics).
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1)
    arch: str = Field(min_length=1)
    in_chans: int = Field(ge=1, le=4)
    num_classes: int = Field(ge=1)
    window: int = Field(ge=32, le=2048)
    pixel_size_um: float = Field(gt=0)
    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)
    positive_class: str = Field(min_length=1)
    threshold: Threshold
    """The threshold of a card without ``defaults``; read only through ``method_defaults()``."""
    training: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    defaults: MethodDefaults | None = None
    intended_use: str = ""
    """What the model is fit for, said beside every result (for the shipped model: not for diagnosis)."""

    def method_defaults(self) -> MethodDefaults:
        """The card's own defaults, or the paper's method (CAM, step 25, sigma 5/8 of the window) with the
        card's threshold for a card that has none."""
        if self.defaults is not None:
            return self.defaults
        return MethodDefaults(
            cam="cam",
            step=25,
            sigma=self.window * PAPER_SIGMA_WINDOWS,
            threshold=self.threshold,
            chosen_by="the paper's best CAM row (D'Alonzo et al. 2021, Table 2)",
        )


def parse_card(data: object, *, source: str) -> ModelCard:
    """Validate a decoded ``card.json``; the error names the first offending field."""
    if not isinstance(data, dict):
        raise InvalidModel(f"{source}: card.json must hold a JSON object")
    try:
        card = ModelCard.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "card"
        reason = "missing" if first["type"] == "missing" else first["msg"]
        raise InvalidModel(f"{source}: card.json field '{field}': {reason}") from None
    if card.num_classes != 1:
        raise InvalidModel(f"{source}: card.json field 'num_classes': must be 1 (one aspecific logit)")
    if len(card.mean) != card.in_chans or len(card.std) != card.in_chans:
        raise InvalidModel(f"{source}: card.json fields 'mean'/'std' need {card.in_chans} value(s)")
    if any(s <= 0 for s in card.std):
        raise InvalidModel(f"{source}: card.json field 'std': values must be > 0")
    return card
