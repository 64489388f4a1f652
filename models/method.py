"""The types of the method's parameters that a model card's defaults share with every request: each with its
one set of constraints and its one validator (``worker.params`` builds the whole parameter schema on them).

Plain averaging (no Gaussian weights) is the sigma ``"none"``, written so in a request, on the command line,
in ``card.json``, in a job's keyword arguments and in ``summary.json`` alike.
"""

from __future__ import annotations

import contextlib
import math
from typing import Annotated, Final, Literal

from pydantic import BeforeValidator, Field, StrictFloat, StrictInt
from pydantic_core import PydanticCustomError

PLAIN_AVERAGING: Final = "none"
"""The sigma of plain averaging (every window weighted 1)."""

CamMethod = Literal["cam", "scorecam"]


def _sigma(value: object) -> object:
    """A sigma in processing pixels (> 0, finite) or ``"none"``; text (the command line's) is read as a
    number. Checked before the union, so that a refusal says what a sigma may be, once, and names the
    value as it was given."""
    shown = repr(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text == PLAIN_AVERAGING:
            return PLAIN_AVERAGING
        with contextlib.suppress(ValueError):  # not a number: refused below, as given
            value, shown = float(text), text
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise PydanticCustomError(
            "sigma",
            'must be a number of pixels > 0 or "none" (plain averaging), got {value}',
            {"value": shown},
        )
    return float(value)


Sigma = Annotated[
    StrictFloat | Literal["none"],
    BeforeValidator(_sigma),
    Field(description='The Gaussian\'s sigma in processing pixels, or "none" for plain averaging.'),
]
Step = Annotated[
    StrictInt,
    Field(ge=1, description="Window step in processing pixels; at most the model's window."),
]
Threshold = Annotated[StrictFloat, Field(ge=0, le=1, description="Mask threshold on the heat (0..1).")]
