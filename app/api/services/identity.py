"""What identifies a result: the zoo model a request names (with its weights' hashes) and the result key.

A job's result key hashes the mosaic's bytes, the model's card and weights and every engine parameter; the
result folder is named by it, so identical requests share one result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from app.api.errors import FieldError
from models.card import ModelCard
from models.errors import InvalidModel
from worker.io.files import cached_file_sha256, file_sha256
from worker.io.zoo import CARD_FILE, WEIGHTS_FILE, read_card, zoo_model
from worker.params import SegmentParams


@dataclass(frozen=True)
class ModelChoice:
    """A zoo model named by a request, with what identifies its weights."""

    name: str
    card: ModelCard
    identity: dict[str, str]


def choose_model(zoo: Path, name: str) -> ModelChoice:
    """A model of the zoo by folder name; a name that is not there is a 422 naming the field."""
    try:
        folder = zoo_model(zoo, name)
    except InvalidModel:
        raise FieldError("model", f"{name!r} is not a model of the zoo (GET /v1/models lists them)") from None
    try:
        card = read_card(folder)
    except InvalidModel as exc:
        raise FieldError("model", f"{name!r} is not usable: {str(exc).replace(str(folder), name)}") from None
    return ModelChoice(name=name, card=card, identity=_model_identity(folder))


def _model_identity(folder: Path) -> dict[str, str]:
    return {
        "card_sha256": file_sha256(folder / CARD_FILE),
        "weights_sha256": cached_file_sha256(folder / WEIGHTS_FILE),
    }


def result_key_for(mosaic_sha256: str, model: ModelChoice, params: SegmentParams) -> str:
    identity = {"mosaic": mosaic_sha256, "model": model.identity, "params": params.identity()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
