"""ScoreCAM (Wang et al., CVPR-W 2020) for a timm classifier with one aspecific logit.

For each window ``X`` (already normalised as the network expects) and each channel ``k`` of the activations
``A = features_fn(X)``:

1. ``A_k`` is upsampled bilinearly (``align_corners=False``) to the window size and min-max normalised to
   [0, 1], giving the mask ``H_k`` (a constant channel gives an all-zero mask);
2. the masked window ``X * H_k`` goes through the whole network and its score is ``s_k = sigmoid(logit)``
   (with one logit the sigmoid takes the place of the softmax of a multi-class network);
3. the map is ``ReLU(sum_k s_k * up(A_k))``, returned at the window size and *not* normalised: the engine
   applies to it the same per-window min-max normalisation and ``p *`` weighting as to a classic CAM.

Bilinear upsampling is linear, so ``sum_k s_k up(A_k) = up(sum_k s_k A_k)``; the map is formed at the
activation resolution and upsampled once, which is the same map up to float rounding.

Activations come from ``net.forward_features`` by default, the layer classic CAM uses. Another layer can be
chosen by passing ``features_fn``, any callable from the window batch to (n, C, h, w) activations, e.g.
``lambda x: net.forward_intermediates(x, indices=[3], intermediates_only=True)[0]`` for a timm model, or a
truncated ``nn.Sequential``.

Cost: one masked forward per (window, channel), ``C`` times a classic CAM (1408 channels for EfficientNet-B2).
Two options trade exactness for time, both off by default:

* ``top_k``: score only the ``k`` channels of each window ranked highest, by the channel's mean activation
  (``rank="activation"``) or by its term in the CAM logit, classifier weight times mean activation
  (``rank="cam_weight"``, default features only); the others get ``s_k = 0``. ``top_k >= C`` is exact.
* ``skip_below``: a window whose own probability ``p`` is below ``skip_below`` gets an all-zero map without
  any masked forward. Its contribution to the heat map, ``p`` times a map normalised to [0, 1], is below
  ``skip_below`` wherever it lands, so the heat map moves by less than ``skip_below`` (before the overlap
  weighting, which averages).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.cam.classic import minmax_per_window, pad_batch
from models.errors import InvalidModel, InvalidParameter
from models.network import classifier_weight

FeaturesFn = Callable[[Tensor], Tensor]
ChannelRank = Literal["activation", "cam_weight"]


@dataclass(frozen=True, kw_only=True)
class ScoreCamParams:
    """``chunk`` masked windows per forward pass; ``top_k``/``rank`` and ``skip_below`` as in the module doc
    (the defaults are exact)."""

    chunk: int = 64
    top_k: int | None = None
    rank: ChannelRank = "activation"
    skip_below: float = 0.0

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise InvalidParameter(f"chunk must be >= 1, got {self.chunk}")
        if self.top_k is not None and self.top_k < 1:
            raise InvalidParameter(f"top_k must be >= 1 or none, got {self.top_k}")
        if self.rank not in ("activation", "cam_weight"):
            raise InvalidParameter(f"rank must be 'activation' or 'cam_weight', got {self.rank!r}")
        if not 0 <= self.skip_below <= 1:
            raise InvalidParameter(f"skip_below must be in [0, 1], got {self.skip_below}")


@dataclass(frozen=True, kw_only=True)
class ScoreCamCounts:
    """What a ScoreCAM run did; counts add up over batches (``+``) for the job summary."""

    windows: int = 0
    windows_skipped: int = 0
    masked_forwards: int = 0
    """Masked windows passed through the network (windows scored times channels scored per window)."""
    batches: int = 0
    """Forward passes of masked windows (of at most ``chunk`` each)."""

    def __add__(self, other: ScoreCamCounts) -> ScoreCamCounts:
        if not isinstance(other, ScoreCamCounts):
            return NotImplemented
        return ScoreCamCounts(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def as_dict(self) -> dict[str, int]:
        return {f.name: int(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class ScoreCamResult:
    """``maps`` (n, S, S), un-normalised and non-negative; ``probs`` (n,) the windows' own probabilities."""

    maps: Tensor
    probs: Tensor
    counts: ScoreCamCounts


def scorecam_cost(n_windows: int, n_channels: int, top_k: int | None = None) -> int:
    """Images through the network for ScoreCAM of ``n_windows`` windows: one plain pass per window plus one
    masked pass per scored channel (before any window is skipped by ``skip_below``)."""
    if n_windows < 0 or n_channels < 1:
        raise InvalidParameter(f"need n_windows >= 0 and n_channels >= 1, got {n_windows}, {n_channels}")
    scored = n_channels if top_k is None else min(top_k, n_channels)
    return n_windows * (1 + scored)


def _one_logit(logits: Tensor, n: int) -> Tensor:
    if logits.ndim != 2 or logits.shape != (n, 1):
        raise InvalidModel(f"ScoreCAM needs a network with one logit, got output shape {tuple(logits.shape)}")
    return logits[:, 0]


def _rank_channels(net: nn.Module, acts: Tensor, params: ScoreCamParams, custom: bool) -> Tensor:
    """(windows, k) indices of the channels to score in each window."""
    n_channels = acts.shape[1]
    k = n_channels if params.top_k is None else min(params.top_k, n_channels)
    if k == n_channels:
        return torch.arange(n_channels, device=acts.device).expand(acts.shape[0], -1)
    strength = acts.float().mean(dim=(-2, -1))
    if params.rank == "cam_weight":
        if custom:
            raise InvalidParameter("rank='cam_weight' needs the default features (the classifier's input)")
        weight, _ = classifier_weight(net)
        if weight.shape != (1, n_channels):
            raise InvalidModel(
                f"classifier weight {tuple(weight.shape)} does not match {n_channels} channels"
            )
        strength = strength * weight.float()
    return strength.topk(k, dim=1).indices


@torch.no_grad()
def scorecam(
    net: nn.Module,
    x: Tensor,
    *,
    params: ScoreCamParams | None = None,
    features_fn: FeaturesFn | None = None,
    pad: Callable[[int], int] | None = None,
) -> ScoreCamResult:
    """ScoreCAM maps of a batch of windows ``x`` (n, C_in, S, S); ``net`` must be in eval mode.

    ``pad`` gives the batch dimension each network call runs at for ``m`` inputs (the plain pass and every
    chunk of masked windows): the inputs are padded with zeros up to it and the padding's outputs dropped,
    so a caller that fixes its call shapes (an engine on an accelerator) keeps them fixed here too. Masked
    windows of several windows and channels share one chunk, laid out channels-last on a GPU."""
    params = params or ScoreCamParams()
    if x.ndim != 4:
        raise InvalidParameter(f"windows must be (n, channels, height, width), got shape {tuple(x.shape)}")
    if net.training:
        raise InvalidParameter(
            "ScoreCAM needs the network in eval mode (batch norm would mix masked windows)"
        )
    n, size = x.shape[0], (x.shape[-2], x.shape[-1])
    padded = pad_batch(x, pad(n)) if pad is not None else x
    forward_features = cast(FeaturesFn, net.forward_features)
    acts = (features_fn or forward_features)(padded)
    if acts.ndim != 4 or acts.shape[0] != padded.shape[0]:
        raise InvalidParameter(f"activations must be (n, C, h, w), got shape {tuple(acts.shape)}")
    # The window's own logit: from the same activations when they are the classifier's input.
    logits = cast(FeaturesFn, net.forward_head)(acts) if features_fn is None else net(padded)
    acts = acts[:n]
    probs = torch.sigmoid(_one_logit(logits, padded.shape[0])[:n].float())
    layout = torch.channels_last if x.device.type == "cuda" else torch.contiguous_format

    active = torch.flatten(torch.nonzero(probs >= params.skip_below))
    scores = torch.zeros(acts.shape[:2], dtype=acts.dtype, device=acts.device)
    masked = batches = 0
    if active.numel():
        channels = _rank_channels(net, acts[active], params, custom=features_fn is not None)
        window_of = active[:, None].expand_as(channels).reshape(-1)
        channel_of = channels.reshape(-1)
        masked = int(window_of.numel())
        for start in range(0, masked, params.chunk):
            w = window_of[start : start + params.chunk]
            c = channel_of[start : start + params.chunk]
            up = F.interpolate(acts[w, c][:, None], size=size, mode="bilinear", align_corners=False)
            inputs = x[w] * minmax_per_window(up).to(x.dtype)
            m = int(w.numel())
            inputs = pad_batch(inputs, pad(m)) if pad is not None else inputs
            masked_logits = _one_logit(net(inputs.contiguous(memory_format=layout)), inputs.shape[0])[:m]
            scores[w, c] = torch.sigmoid(masked_logits.float()).to(scores.dtype)
            batches += 1

    weighted = torch.einsum("nc,nchw->nhw", scores, acts)
    maps = F.relu(F.interpolate(weighted[:, None], size=size, mode="bilinear", align_corners=False))[:, 0]
    counts = ScoreCamCounts(
        windows=n, windows_skipped=n - int(active.numel()), masked_forwards=masked, batches=batches
    )
    return ScoreCamResult(maps=maps, probs=probs, counts=counts)
