"""Class activation maps of a batch of windows (Zhou et al.), as the paper uses them.

For each window: features F = forward_features(x); p = sigmoid(forward_head(F)); cam = sum_c W_c F_c with W
the classifier weight (no bias); the map is min-max normalised over its own h x w grid (zeros where it is
flat). The normalisation is the paper's, explicit, and done here once. Upsampling to the window size and the
multiplication by p happen at stitching time, so the low-resolution maps can be kept and restitched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.network import classifier_weight
from models.precision import autocast_unless_fp32


@dataclass(frozen=True)
class WindowMaps:
    """Per-window probability of the positive class and its normalised map in [0, 1]."""

    prob: torch.Tensor  # (n,)
    maps: torch.Tensor  # (n, h, w), float32


def normalise_input(pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (n, S, S) or (n, C, S, S) windows to the network's float input, (pixels/255 - mean)/std."""
    x = pixels.float().div_(255.0)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(m).div_(s)


def pad_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """The batch with zero entries appended up to ``size`` along the first axis (a fixed call shape); the
    caller drops the outputs of the padding."""
    if x.shape[0] >= size:
        return x
    return torch.cat([x, x.new_zeros((size - x.shape[0], *x.shape[1:]))])


def minmax_per_window(maps: torch.Tensor) -> torch.Tensor:
    """Scale each map of (..., h, w) to [0, 1] over its own h x w grid; a flat map becomes all zeros.

    The one min-max rule: CAM maps (n, h, w) and ScoreCAM's upsampled masks (n, 1, S, S) both use it.
    """
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (maps - lo) / safe, torch.zeros_like(maps))


def features_and_logit(
    net: nn.Module, x: torch.Tensor, *, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature maps (n, C, h, w) in float32 and the single logit (n,) of a batch.

    ``dtype`` (bf16/fp16) runs the feature extractor under autocast; the head and everything after it
    run in float32 so reduced precision touches only the convolutions.
    """
    with autocast_unless_fp32(x.device.type, dtype):
        feats = net.forward_features(x)  # type: ignore[operator]
    feats = feats.float()
    logit = net.forward_head(feats)  # type: ignore[operator]
    return feats, logit.float().reshape(-1)


def cam_from_features(net: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """sum_c W_c F_c for the single class, (n, h, w); no bias, as in Zhou et al."""
    weight, _ = classifier_weight(net)
    return torch.einsum("c,nchw->nhw", weight[0].float(), feats)


def cam_windows(net: nn.Module, x: torch.Tensor, *, dtype: torch.dtype | None = None) -> WindowMaps:
    """Probability and normalised CAM of every window in the batch, at feature resolution."""
    feats, logit = features_and_logit(net, x, dtype=dtype)
    return WindowMaps(prob=torch.sigmoid(logit), maps=minmax_per_window(cam_from_features(net, feats)))


def upsample_maps(maps: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (align_corners=False) upsampling of (n, h, w) maps to (n, size, size)."""
    if maps.shape[-1] == size and maps.shape[-2] == size:
        return maps
    return F.interpolate(maps.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
