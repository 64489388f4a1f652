"""The network factory: a timm classifier with one aspecific logit."""

from __future__ import annotations

from typing import Any

import timm
import torch
from torch import nn

from models.card import ModelCard


def create_network(
    arch: str = "efficientnet_b2", *, in_chans: int = 1, drop_rate: float = 0.0, **kwargs: Any
) -> nn.Module:
    """A randomly initialised timm model with a single logit.

    Every timm classifier exposes ``forward_features``/``forward_head``/``get_classifier``, which is all
    the CAM code needs. No pretrained weights are fetched.
    """
    return timm.create_model(
        arch, pretrained=False, num_classes=1, in_chans=in_chans, drop_rate=drop_rate, **kwargs
    )


def network_for_card(card: ModelCard) -> nn.Module:
    """An uninitialised network with the architecture a card describes, in eval mode."""
    net = create_network(card.arch, in_chans=card.in_chans)
    return net.eval()


def classifier_weight(net: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The final linear layer's weight (num_classes x C) and bias, the CAM's channel weights."""
    head = net.get_classifier()  # type: ignore[operator]
    if not isinstance(head, nn.Linear):
        raise TypeError(f"CAM needs a linear classifier, {type(net).__name__} has {type(head).__name__}")
    return head.weight, head.bias
