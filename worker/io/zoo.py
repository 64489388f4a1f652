"""Model folders on disk: reading cards and finding models by name. Imports no torch."""

from __future__ import annotations

import json
from pathlib import Path

from models.card import ModelCard, parse_card
from models.errors import InvalidModel

WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
DEFAULT_ZOO = Path(__file__).resolve().parents[2] / "models" / "zoo"
DEFAULT_MODEL = "phantom-b2"


def read_card(model_dir: Path) -> ModelCard:
    """Parse ``card.json`` of a model folder, failing with the missing file or field named."""
    card_path = model_dir / CARD_FILE
    if not model_dir.is_dir():
        raise InvalidModel(f"{model_dir}: not a model folder")
    if not card_path.is_file():
        raise InvalidModel(f"{model_dir}: missing {CARD_FILE}")
    if not (model_dir / WEIGHTS_FILE).is_file():
        raise InvalidModel(f"{model_dir}: missing {WEIGHTS_FILE}")
    try:
        data = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModel(f"{card_path}: not valid JSON ({exc})") from None
    return parse_card(data, source=str(model_dir))


def zoo_model(zoo: Path, name: str) -> Path:
    """The folder of the zoo model ``name``: a plain folder name directly under ``zoo``, never a path."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or not (zoo / name).is_dir():
        known = ", ".join(sorted(list_models(zoo))) or "none"
        raise InvalidModel(f"{name!r} is not a model of the zoo (known: {known})")
    return zoo / name


def list_models(zoo: Path) -> dict[str, ModelCard]:
    """Every valid model folder directly under ``zoo``, by folder name."""
    found: dict[str, ModelCard] = {}
    if not zoo.is_dir():
        return found
    for sub in sorted(zoo.iterdir()):
        if (sub / CARD_FILE).is_file():
            try:
                found[sub.name] = read_card(sub)
            except InvalidModel:
                continue
    return found


def resolve_model(name_or_path: str | Path | None, zoo: Path = DEFAULT_ZOO) -> Path:
    """A model folder from a zoo name (``phantom-b2``) or a path; ``None`` means the default model."""
    candidate = Path(name_or_path) if name_or_path is not None else zoo / DEFAULT_MODEL
    if candidate.is_dir():
        return candidate
    in_zoo = zoo / str(name_or_path)
    if name_or_path is not None and "/" not in str(name_or_path) and in_zoo.is_dir():
        return in_zoo
    known = ", ".join(list_models(zoo)) or "none"
    raise InvalidModel(
        f"{name_or_path or candidate}: no such model folder or zoo model (the zoo {zoo} has: {known})"
    )
