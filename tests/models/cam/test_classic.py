"""The per-window min-max normalisation shared by classic CAM and ScoreCAM."""

from __future__ import annotations

import torch

from models.cam.classic import minmax_per_window


def test_minmax_per_window_constant_map_is_zero() -> None:
    maps = torch.stack([torch.full((4, 4), 3.0), torch.arange(16.0).reshape(4, 4)])
    out = minmax_per_window(maps)
    assert (out[0] == 0).all()
    assert float(out[1].min()) == 0.0 and float(out[1].max()) == 1.0


def test_minmax_per_window_scales_each_map_of_a_channel_batch_alone() -> None:
    """ScoreCAM's masks come as (n, 1, S, S): each map is scaled over its own grid, not over the batch."""
    maps = torch.stack([torch.arange(16.0).reshape(1, 4, 4), 10 + 2 * torch.arange(16.0).reshape(1, 4, 4)])
    out = minmax_per_window(maps)
    assert out.shape == maps.shape
    assert torch.equal(out[0], out[1]) and torch.equal(out[0, 0], minmax_per_window(maps[:1, 0])[0])
