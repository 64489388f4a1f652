"""Saving and loading model folders (``model.safetensors`` + ``card.json``)."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from models.card import ModelCard, parse_card
from models.errors import InvalidModel
from models.network import network_for_card
from worker.io.files import file_sha256, swap_into_place
from worker.io.zoo import CARD_FILE, WEIGHTS_FILE, read_card


@dataclass(frozen=True)
class LoadedModel:
    """A network ready for inference together with the card and weight hash it came from."""

    card: ModelCard
    net: nn.Module
    weights_sha256: str
    path: Path
    compiled: Any = None
    """A ``worker.engine.predictor.CompiledCam`` when the worker compiled this network at start, else None."""

    @property
    def device(self) -> torch.device:
        """Where the network's weights live (and so where its windows run)."""
        return next(self.net.parameters()).device


def load_model(model_dir: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Build the card's architecture and load its weights; mismatches are named, not tracebacks."""
    card = read_card(model_dir)
    try:
        net = network_for_card(card)
    except RuntimeError as exc:
        raise InvalidModel(f"{model_dir}: card.json field 'arch': {exc}") from None
    weights = model_dir / WEIGHTS_FILE
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise InvalidModel(f"{weights}: unreadable weights ({exc})") from None
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise InvalidModel(f"{weights}: weights do not match card.json field 'arch' ({card.arch}): {detail}")
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise InvalidModel(
                f"{weights}: weights do not match card.json field 'arch' ({card.arch}): "
                f"{key} is {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}"
            )
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    net.to(device).eval()
    if torch.device(device).type == "cuda":
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # faster convolutions
    return LoadedModel(card=card, net=net, weights_sha256=file_sha256(weights), path=model_dir)


def save_model(model_dir: Path, net: nn.Module, card: ModelCard, *, half: bool = False) -> None:
    """Write a model folder atomically: built beside the target, renamed into place when complete."""
    parse_card(card.model_dump(), source=str(model_dir))
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.", dir=model_dir.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        (tmp / CARD_FILE).write_text(json.dumps(card.model_dump(), indent=2) + "\n", encoding="utf-8")
        swap_into_place(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_random_model(
    model_dir: Path, *, arch: str, window: int, seed: int = 0, note: str = "random weights"
) -> Path:
    """A random-weight model folder at 2 um/px, for benchmarks that time a network rather than judge it."""
    torch.manual_seed(seed)
    card = ModelCard(
        name=f"random-{arch}",
        arch=arch,
        in_chans=1,
        num_classes=1,
        window=window,
        pixel_size_um=2.0,
        mean=[0.5],
        std=[0.25],
        positive_class="aspecific",
        threshold=0.5,
        training={"note": note},
    )
    save_model(model_dir, network_for_card(card), card)
    return model_dir
