"""Dense CAM: every window's CAM and probability from one fully convolutional pass.

CAM is linear in the features, so for windows placed on the network's output stride (32 px for
EfficientNet) a window's logit is the mean of W.F over its cells plus the bias, and its CAM is W.F
restricted to its cells. The paper's per-window min-max normalisation becomes sliding min/max filters, and
stitching happens on the cell grid before one final upsampling.

EfficientNet's squeeze-excitation blocks average over their whole input, which for a large tile differs
from a 256 px window. ``windowed_squeeze_excite`` replaces that global mean by a local mean over the
window's footprint at each block's resolution, so each position sees about what a window centred on it sees;
it does so with forward hooks that it removes on exit, leaving the network's modules as they were.
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


class _WindowedSqueeze:
    """The hooks that give every ``SqueezeExcite`` of a network a window-sized pool instead of a global one.

    timm's block computes ``x * gate(expand(act(reduce(mean(x)))))``. Its forward runs unchanged; a pre-hook
    on the block keeps its input ``x``, and a hook on its ``conv_reduce`` replaces the reduced global mean
    by ``local_mean(reduce(x))``, which the block then activates, expands and gates with as usual. The
    reduction is affine and the local mean's weights sum to one, so they commute: reducing the channels
    first (by 4 to 24 times) makes the box filter that much cheaper, with the same result. The global mean
    the block still takes is discarded (one pass over ``x`` and a 1 x 1 convolution).

    The pool side at each block's resolution is ``window`` over that block's stride, measured as the input
    height over the block's input height; the input height is read by a pre-hook on the stem.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self.input_height = window
        self.block_input: torch.Tensor | None = None

    def see_input(self, _stem: nn.Module, args: tuple[Any, ...]) -> None:
        self.input_height = int(args[0].shape[-2])

    def see_block_input(self, _se: nn.Module, args: tuple[Any, ...]) -> None:
        self.block_input = args[0]

    def reduce_locally(
        self, reduce: nn.Module, _args: tuple[Any, ...], _global: torch.Tensor
    ) -> torch.Tensor:
        x, self.block_input = self.block_input, None
        if x is None:
            raise RuntimeError("conv_reduce ran outside its SqueezeExcite block")
        stride = max(1, round(self.input_height / x.shape[-2]))
        # ``forward`` itself, not ``reduce(x)``, so this hook does not run again on the full-size input
        return local_mean(reduce.forward(x), max(1, round(self.window / stride)))


@contextmanager
def windowed_squeeze_excite(net: nn.Module, window: int) -> Iterator[None]:
    """Within the block, every timm ``SqueezeExcite`` of ``net`` pools over a window-sized neighbourhood.

    Only forward hooks are added (see :class:`_WindowedSqueeze`), and removed on exit however the block
    ends: no module's attributes or methods are replaced. The network is the windowed one for every caller
    while the block runs, so a network shared between threads must not be used elsewhere meanwhile.
    """
    from timm.models._efficientnet_blocks import SqueezeExcite

    hooks = _WindowedSqueeze(window)
    stem = next(m for m in net.modules() if isinstance(m, nn.Conv2d))  # sees the input size first
    handles = [stem.register_forward_pre_hook(hooks.see_input)]
    try:
        for se in (m for m in net.modules() if isinstance(m, SqueezeExcite)):
            handles.append(se.register_forward_pre_hook(hooks.see_block_input))
            handles.append(se.conv_reduce.register_forward_hook(hooks.reduce_locally))
        yield
    finally:
        for handle in handles:
            handle.remove()


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
