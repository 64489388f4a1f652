"""Dense CAM math against per-window computation, with a network whose features are exactly local."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.cam.classic import cam_windows
from models.cam.dense import stitch_cells, window_statistics, windowed_squeeze_excite
from models.network import create_network


class PatchNet(nn.Module):
    """Features of each 32 px cell depend on that cell only; head = global average pool + linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 32, stride=32)
        self.fc = nn.Linear(6, 1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))

    def forward_head(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc(f.mean((2, 3)))

    def get_classifier(self) -> nn.Module:
        return self.fc


def test_window_statistics_equal_per_window_cam() -> None:
    torch.manual_seed(0)
    net = PatchNet().eval()
    image = torch.randn(1, 1, 32 * 7, 32 * 9)
    with torch.no_grad():
        cam = torch.einsum("c,chw->hw", net.fc.weight[0], net.forward_features(image)[0])
        logit, lo, hi = window_statistics(cam, float(net.fc.bias[0]), cells=3)
        for i, j in [(0, 0), (2, 5), (4, 6)]:
            window = image[..., 32 * i : 32 * (i + 3), 32 * j : 32 * (j + 3)]
            exact = cam_windows(net, window)
            assert torch.allclose(torch.sigmoid(logit[i, j]), exact.prob[0], atol=1e-6)
            raw = cam[i : i + 3, j : j + 3]
            assert torch.allclose(lo[i, j], raw.min()) and torch.allclose(hi[i, j], raw.max())
            norm = (raw - raw.min()) / (raw.max() - raw.min())
            assert torch.allclose(norm, exact.maps[0], atol=1e-5)


def test_stitch_cells_with_constant_probability_keeps_it_at_map_maxima() -> None:
    cam = torch.arange(16.0).reshape(4, 4)
    logit, lo, hi = window_statistics(cam, 0.0, cells=2)
    prob = torch.full_like(logit, 0.5)
    heat = stitch_cells(cam, prob, lo, hi, torch.ones(2, 2), torch.ones_like(prob, dtype=torch.bool))
    assert heat.shape == (4, 4)
    assert heat[3, 3] == 0.5  # the maximum of the only window covering it
    assert heat[0, 0] == 0.0  # the minimum of the only window covering it
    assert ((heat >= 0) & (heat <= 0.5)).all()


def test_skipped_windows_leave_cells_uncovered() -> None:
    cam = torch.rand(5, 5)
    logit, lo, hi = window_statistics(cam, 0.0, cells=2)
    keep = torch.zeros_like(logit, dtype=torch.bool)
    keep[0, 0] = True
    heat = stitch_cells(cam, torch.sigmoid(logit), lo, hi, torch.ones(2, 2), keep)
    assert (heat[2:, :] == 0).all() and (heat[:, 2:] == 0).all()


def test_windowed_squeeze_excite_equals_global_when_the_window_covers_the_input() -> None:
    torch.manual_seed(0)
    net = create_network("test_efficientnet").eval()
    x = torch.randn(1, 1, 64, 64)
    with torch.no_grad():
        plain = net.forward_features(x)
        with windowed_squeeze_excite(net, window=64):
            windowed = net.forward_features(x)
        with windowed_squeeze_excite(net, window=32):
            local = net.forward_features(x)
        restored = net.forward_features(x)
    scale = float(plain.abs().max())
    assert float((plain - windowed).abs().max()) < 1e-4 * scale
    assert float((plain - local).abs().max()) > 1e-3 * scale  # local pooling changes the gates
    assert torch.equal(plain, restored)


def test_local_mean_equals_average_pooling() -> None:
    import torch.nn.functional as F

    from models.cam.dense import local_mean

    torch.manual_seed(1)
    x = torch.randn(2, 3, 13, 17)
    for k in (1, 2, 3, 4, 7, 12):
        pooled = F.avg_pool2d(x, k, stride=1, padding=k // 2, count_include_pad=False)[..., :13, :17]
        assert torch.allclose(local_mean(x, k), pooled, atol=1e-5), k
    assert torch.allclose(local_mean(x, 20), x.mean((2, 3), keepdim=True))


def test_windowed_squeeze_excite_equals_a_local_mean_before_the_reduction() -> None:
    """Reducing channels before the box filter is the same as the block applied to the local mean."""
    import torch.nn.functional as F
    from timm.models._efficientnet_blocks import SqueezeExcite

    from models.cam.dense import local_mean

    torch.manual_seed(2)
    se = SqueezeExcite(24, rd_ratio=0.25).eval()
    holder = nn.Sequential(nn.Conv2d(24, 24, 1), se).eval()  # the stem conv tells the input size
    x = torch.randn(1, 24, 40, 40)
    with torch.no_grad():
        with windowed_squeeze_excite(holder, window=12):
            got = holder(x)
        y = holder[0](x)
        gate = se.gate(se.conv_expand(se.act1(se.conv_reduce(local_mean(y, 12)))))
        want = y * gate
        plain = holder(x)
    assert torch.allclose(got, want, atol=1e-5)
    assert not torch.allclose(got, plain, atol=1e-3)  # a 12 px neighbourhood is not the 40 px mean
    assert F.mse_loss(plain, holder(x)) == 0  # the block is restored afterwards


def test_windowed_squeeze_excite_leaves_the_network_as_it_was_when_the_block_fails() -> None:
    from timm.models._efficientnet_blocks import SqueezeExcite

    net = create_network("test_efficientnet").eval()
    blocks = [m for m in net.modules() if isinstance(m, SqueezeExcite)]
    assert blocks
    before = {id(m): dict(vars(m)) for m in net.modules()}
    with pytest.raises(KeyError), windowed_squeeze_excite(net, window=32):
        assert all(se._forward_pre_hooks for se in blocks)  # hooked while the block runs
        raise KeyError("stop")
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in net.modules())
    assert all("forward" not in vars(se) for se in blocks)
    assert {id(m): dict(vars(m)) for m in net.modules()} == before
