"""Dense CAM: every window's CAM and probability from one fully convolutional pass.

CAM is linear in the features, so for windows placed on the network's output stride (32 px for
EfficientNet) a window's logit is the mean of W.F over its cells plus the bias, and its CAM is W.F
restricted to its cells. The paper's per-window min-max normalisation becomes sliding min/max filters, and
stitching happens on the cell grid before one final upsampling.

EfficientNet's squeeze-excitation blocks average over their whole input, which for a large tile differs
from a 256 px window. ``windowed_squeeze_excite`` replaces that global mean by a local mean over the
window's footprint at each block's resolution, so each position sees about what a window centred on it sees.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _box_sum_1d(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Sum over [i - k//2, i - k//2 + k - 1] (clipped to the axis) at every i, from one cumulative sum."""
    n = x.shape[dim]
    csum = torch.cumsum(x.double(), dim)
    csum = torch.cat([torch.zeros_like(csum.narrow(dim, 0, 1)), csum], dim)
    idx = torch.arange(n, device=x.device)
    hi = (idx + (k - 1 - k // 2)).clamp(max=n - 1) + 1
    lo = (idx - k // 2).clamp(min=0)
    return csum.index_select(dim, hi) - csum.index_select(dim, lo)


def local_mean(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over a k x k neighbourhood of every position, padding excluded, in O(1) per position.

    Equal to ``avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)`` cropped to the input
    size, without its O(k^2) cost (k reaches 128 in EfficientNet's early blocks for 256 px windows).
    """
    if k >= x.shape[-2] and k >= x.shape[-1]:
        return x.mean((2, 3), keepdim=True)
    ones_h = torch.ones(x.shape[-2], 1, device=x.device)
    ones_w = torch.ones(1, x.shape[-1], device=x.device)
    count = _box_sum_1d(ones_h, k, 0) * _box_sum_1d(ones_w, k, 1)
    total = _box_sum_1d(_box_sum_1d(x, k, -2), k, -1)
    return (total / count).to(x.dtype)


@contextmanager
def windowed_squeeze_excite(net: nn.Module, window: int) -> Iterator[None]:
    """Within the block, every timm ``SqueezeExcite`` pools over a window-sized neighbourhood."""
    from timm.models._efficientnet_blocks import SqueezeExcite

    state: dict[str, int] = {"height": window}

    def remember(_m: nn.Module, args: tuple[Any, ...]) -> None:
        state["height"] = int(args[0].shape[-2])

    def local_forward(se: Any, x: torch.Tensor) -> torch.Tensor:
        stride = max(1, round(state["height"] / x.shape[-2]))
        # conv_reduce is affine and the local mean's weights sum to one, so they commute: reducing the
        # channels first (by 4 to 24 times) makes the box filter that much cheaper, with the same result.
        x_se = local_mean(se.conv_reduce(x), max(1, round(window / stride)))
        x_se = se.conv_expand(se.act1(x_se))
        return x * se.gate(x_se)

    blocks = [m for m in net.modules() if isinstance(m, SqueezeExcite)]
    stem = next(m for m in net.modules() if isinstance(m, nn.Conv2d))  # sees the input size first
    hook = stem.register_forward_pre_hook(remember)
    for se in blocks:
        se.forward = local_forward.__get__(se)  # type: ignore[method-assign]
    try:
        yield
    finally:
        hook.remove()
        for se in blocks:
            del se.forward


def window_statistics(cam: torch.Tensor, bias: float, cells: int) -> tuple[torch.Tensor, ...]:
    """Per window of ``cells`` x ``cells`` on the cell grid (one per position): logit, min and max of W.F."""
    grid = cam[None, None]
    logit = F.avg_pool2d(grid, cells, stride=1)[0, 0] + bias
    hi = F.max_pool2d(grid, cells, stride=1)[0, 0]
    lo = -F.max_pool2d(-grid, cells, stride=1)[0, 0]
    return logit, lo, hi


def stitch_cells(
    cam: torch.Tensor,
    prob: torch.Tensor,
    lo: torch.Tensor,
    hi: torch.Tensor,
    weights: torch.Tensor,
    keep: torch.Tensor,
) -> torch.Tensor:
    """Weighted average over windows of p x normalised CAM, on the cell grid.

    ``weights`` (cells x cells) is the stitching kernel sampled at cell centres; ``keep`` marks windows that
    are not empty. Cells covered by no kept window are 0.
    """
    cells = weights.shape[0]
    nh, nw = prob.shape
    span = hi - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    num = torch.zeros_like(cam)
    den = torch.zeros_like(cam)
    gate = keep.to(cam.dtype)
    for a in range(cells):
        for b in range(cells):
            view = cam[a : a + nh, b : b + nw]
            norm = torch.where(span > 0, (view - lo) / safe, torch.zeros_like(view))
            num[a : a + nh, b : b + nw] += weights[a, b] * gate * prob * norm
            den[a : a + nh, b : b + nw] += weights[a, b] * gate
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
