"""``/v1/models``: the model cards of the zoo, so clients can choose a job's ``model``."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import OwnerDep, SettingsDep
from app.api.errors import error_responses
from app.api.schemas import ModelList, ModelOut
from worker.io.zoo import list_models

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("", response_model=ModelList, responses=error_responses(401), summary="List the models")
def get_models(_owner: OwnerDep, settings: SettingsDep) -> ModelList:
    cards = list_models(settings.model_zoo)
    return ModelList(
        models=[
            ModelOut(
                name=name,
                default=name == settings.default_model,
                defaults=card.method_defaults(),
                intended_use=card.intended_use,
                card=card.model_dump(),
            )
            for name, card in cards.items()
        ]
    )
