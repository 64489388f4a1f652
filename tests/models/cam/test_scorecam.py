"""ScoreCAM against a plain per-channel loop on a tiny real timm model."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import timm
import torch
import torch.nn.functional as F
from torch import Tensor

from models.cam.scorecam import (
    ScoreCamCounts,
    ScoreCamParams,
    ScoreCamResult,
    scorecam,
    scorecam_cost,
)
from models.errors import InvalidModel, InvalidParameter

SIZE = 64


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """The reference runs hundreds of one-window forwards, for which intra-op threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def net() -> Any:
    """The tiny timm model, typed ``Any`` (its ``forward_*`` methods come through ``__getattr__``)."""
    torch.manual_seed(0)
    return timm.create_model("test_efficientnet", num_classes=1, in_chans=1).eval()


@pytest.fixture(scope="module")
def windows() -> Tensor:
    return torch.randn(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def reference_scorecam(
    net: Any,
    x: Tensor,
    *,
    features_fn: Callable[[Tensor], Tensor] | None = None,
    channels: Sequence[Sequence[int]] | None = None,
) -> Tensor:
    """The definition, one window and one channel at a time."""
    maps = []
    with torch.no_grad():
        acts = (features_fn or net.forward_features)(x)
        for i in range(x.shape[0]):
            total = torch.zeros(SIZE, SIZE)
            for k in range(acts.shape[1]) if channels is None else channels[i]:
                a_up = F.interpolate(
                    acts[i : i + 1, k : k + 1], size=(SIZE, SIZE), mode="bilinear", align_corners=False
                )[0, 0]
                low, high = a_up.min(), a_up.max()
                mask = (a_up - low) / (high - low) if high > low else torch.zeros_like(a_up)
                score = torch.sigmoid(net(x[i : i + 1] * mask)[0, 0])
                total += score * a_up
            maps.append(torch.relu(total))
    return torch.stack(maps)


def assert_maps_close(actual: Tensor, expected: Tensor, tol: float = 1e-4) -> None:
    """Within ``tol`` of the map's scale (the engine min-max normalises each map)."""
    scale = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(actual, expected, rtol=0, atol=tol * scale)


@pytest.fixture(scope="module")
def exact(net: Any, windows: Tensor) -> Tensor:
    return reference_scorecam(net, windows)


@pytest.fixture(scope="module")
def full(net: Any, windows: Tensor) -> ScoreCamResult:
    return scorecam(net, windows)


def test_matches_per_channel_loop(full: ScoreCamResult, exact: Tensor) -> None:
    assert full.maps.shape == (2, SIZE, SIZE)
    assert full.maps.dtype == torch.float32
    assert (full.maps >= 0).all()
    assert float(exact.abs().max()) > 0
    assert_maps_close(full.maps, exact)
    assert full.counts == ScoreCamCounts(windows=2, windows_skipped=0, masked_forwards=2 * 256, batches=8)


def test_probs_are_the_windows_own(net: Any, windows: Tensor) -> None:
    result = scorecam(net, windows, params=ScoreCamParams(top_k=1))
    with torch.no_grad():
        expected = torch.sigmoid(net(windows)[:, 0])
    torch.testing.assert_close(result.probs, expected)


@pytest.mark.parametrize("chunk", [1, 7, 10_000])
def test_chunk_does_not_change_the_map(net: Any, windows: Tensor, chunk: int) -> None:
    reference = scorecam(net, windows, params=ScoreCamParams(top_k=12))
    result = scorecam(net, windows, params=ScoreCamParams(top_k=12, chunk=chunk))
    assert_maps_close(result.maps, reference.maps, tol=1e-6)
    assert result.counts.batches == -(-2 * 12 // chunk)


def test_padded_calls_keep_their_shapes_and_the_map(net: Any, windows: Tensor, full: ScoreCamResult) -> None:
    """Every call padded to a power of two (at most 16): the stem sees only those shapes, the padding's
    outputs are dropped, and maps, probabilities and counts are the unpadded ones."""
    stem = net.conv_stem
    seen: set[tuple[int, ...]] = set()
    handle = stem.register_forward_pre_hook(lambda _m, args: seen.add(tuple(args[0].shape)))
    try:
        padded = scorecam(
            net, windows, params=ScoreCamParams(chunk=12), pad=lambda m: min(16, 1 << (m - 1).bit_length())
        )
    finally:
        handle.remove()
    assert {s[0] for s in seen} == {2, 16, 8}  # the plain pass of 2; masked chunks of 12 and the last 8
    assert_maps_close(padded.maps, full.maps, tol=1e-5)
    torch.testing.assert_close(padded.probs, full.probs)
    assert padded.counts.masked_forwards == full.counts.masked_forwards


@pytest.mark.parametrize("top_k", [256, 1000])
def test_top_k_of_all_channels_is_exact(net: Any, windows: Tensor, full: ScoreCamResult, top_k: int) -> None:
    topped = scorecam(net, windows, params=ScoreCamParams(top_k=top_k))
    torch.testing.assert_close(topped.maps, full.maps, rtol=0, atol=0)
    assert topped.counts == full.counts


def test_top_k_by_activation_scores_the_strongest_channels(net: Any, windows: Tensor) -> None:
    with torch.no_grad():
        acts = net.forward_features(windows)
    chosen = acts.mean(dim=(-2, -1)).topk(8, dim=1).indices.tolist()
    result = scorecam(net, windows, params=ScoreCamParams(top_k=8))
    assert_maps_close(result.maps, reference_scorecam(net, windows, channels=chosen))
    assert result.counts.masked_forwards == 2 * 8


def test_top_k_by_cam_weight(net: Any, windows: Tensor) -> None:
    with torch.no_grad():
        acts = net.forward_features(windows)
    weight = net.get_classifier().weight[0]
    chosen = (acts.mean(dim=(-2, -1)) * weight).topk(5, dim=1).indices.tolist()
    by_activation = acts.mean(dim=(-2, -1)).topk(5, dim=1).indices.tolist()
    assert chosen != by_activation  # the two rankings differ, so the test tells them apart
    result = scorecam(net, windows, params=ScoreCamParams(top_k=5, rank="cam_weight"))
    assert_maps_close(result.maps, reference_scorecam(net, windows, channels=chosen))


def test_cam_weight_needs_default_features(net: Any, windows: Tensor) -> None:
    with pytest.raises(InvalidParameter, match="cam_weight"):
        scorecam(
            net,
            windows,
            params=ScoreCamParams(top_k=5, rank="cam_weight"),
            features_fn=net.forward_features,
        )


def test_other_layer_through_features_fn(net: Any, windows: Tensor) -> None:
    def stage_two(x: Tensor) -> Tensor:
        return net.forward_intermediates(x, indices=[2], intermediates_only=True)[0]

    result = scorecam(net, windows, features_fn=stage_two)
    assert result.counts.masked_forwards == 2 * 32
    assert_maps_close(result.maps, reference_scorecam(net, windows, features_fn=stage_two))


def test_skip_below_zeroes_unlikely_windows(net: Any, windows: Tensor, full: ScoreCamResult) -> None:
    cut = float(full.probs.mean())
    keep = full.probs >= cut
    assert int(keep.sum()) == 1
    result = scorecam(net, windows, params=ScoreCamParams(skip_below=cut))
    assert (result.maps[~keep] == 0).all()
    torch.testing.assert_close(result.maps[keep], full.maps[keep])
    assert result.counts.windows_skipped == int((~keep).sum())
    assert result.counts.masked_forwards == int(keep.sum()) * 256
    # The skipped windows' probabilities are below the cut, which bounds their normalised contribution.
    assert (result.probs[~keep] < cut).all()


def test_skip_everything(net: Any, windows: Tensor) -> None:
    result = scorecam(net, windows, params=ScoreCamParams(skip_below=1.0))
    assert (result.maps == 0).all()
    assert result.counts == ScoreCamCounts(windows=2, windows_skipped=2, masked_forwards=0, batches=0)


def test_counts_add_up() -> None:
    a = ScoreCamCounts(windows=2, windows_skipped=1, masked_forwards=10, batches=1)
    b = ScoreCamCounts(windows=3, windows_skipped=0, masked_forwards=30, batches=2)
    assert (a + b).as_dict() == {"windows": 5, "windows_skipped": 1, "masked_forwards": 40, "batches": 3}


def test_cost() -> None:
    assert scorecam_cost(10, 1408) == 10 * 1409
    assert scorecam_cost(10, 1408, top_k=64) == 10 * 65
    assert scorecam_cost(10, 32, top_k=64) == 10 * 33
    assert scorecam_cost(0, 32) == 0
    with pytest.raises(InvalidParameter):
        scorecam_cost(-1, 32)


def test_rejects_training_mode(windows: Tensor) -> None:
    torch.manual_seed(0)
    training = timm.create_model("test_efficientnet", num_classes=1, in_chans=1).train()
    with pytest.raises(InvalidParameter, match="eval mode"):
        scorecam(training, windows)


def test_rejects_more_than_one_logit(windows: Tensor) -> None:
    torch.manual_seed(0)
    two = timm.create_model("test_efficientnet", num_classes=2, in_chans=1).eval()
    with pytest.raises(InvalidModel, match="one logit"):
        scorecam(two, windows)


def test_rejects_bad_input(net: Any) -> None:
    with pytest.raises(InvalidParameter, match="windows must be"):
        scorecam(net, torch.zeros(1, SIZE, SIZE))


@pytest.mark.parametrize(
    "kwargs",
    [{"chunk": 0}, {"top_k": 0}, {"rank": "gradient"}, {"skip_below": -0.1}, {"skip_below": 1.5}],
)
def test_params_are_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidParameter):
        ScoreCamParams(**kwargs)  # type: ignore[arg-type]


# With random weights every masked window scores about the window's own p (spread ~1e-5 across channels), so
# the map is p x sum_k up(A_k) whatever the scores' formula is, and after the engine's per-window min-max any
# formula that gives all channels one score passes. A classifier rescaled so that the masked scores spread
# over (0, 1) makes the scores matter: the tests below then tell the formula from its near variants.


def variant_scorecam(
    net: Any, x: Tensor, *, scores_fn: str = "sigmoid", align_corners: bool = False
) -> tuple[Tensor, Tensor]:
    """(maps, scores) by the definition, one window and one channel at a time, with the variants used to
    check that the tests can tell them apart: softmax of the masked logits across channels instead of the
    sigmoid of each, and ``align_corners=True`` in the upsampling."""
    with torch.no_grad():
        acts = net.forward_features(x)
        maps, all_scores = [], []
        for i in range(x.shape[0]):
            ups, logits = [], []
            for k in range(acts.shape[1]):
                a_up = F.interpolate(
                    acts[i : i + 1, k : k + 1],
                    size=(SIZE, SIZE),
                    mode="bilinear",
                    align_corners=align_corners,
                )[0, 0]
                low, high = a_up.min(), a_up.max()
                mask = (a_up - low) / (high - low) if high > low else torch.zeros_like(a_up)
                logits.append(net(x[i : i + 1] * mask)[0, 0])
                ups.append(a_up)
            z = torch.stack(logits)
            scores = torch.softmax(z, dim=0) if scores_fn == "softmax" else torch.sigmoid(z)
            maps.append(torch.relu(torch.einsum("k,khw->hw", scores, torch.stack(ups))))
            all_scores.append(scores)
    return torch.stack(maps), torch.stack(all_scores)


def normalised(maps: Tensor) -> Tensor:
    """Each map min-max scaled to [0, 1], as the engine does before stitching."""
    flat = maps.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    return ((flat - low[:, None]) / (high - low).clamp_min(1e-12)[:, None]).view_as(maps)


@pytest.fixture(scope="module")
def spread_net(net: Any, windows: Tensor) -> Any:
    """The tiny model with its classifier rescaled (logit = a (z - mean z)) so that the masked windows'
    scores spread over (0, 1) instead of all sitting at p."""
    spread = copy.deepcopy(net)
    _, scores = variant_scorecam(spread, windows)
    z = torch.logit(scores.clamp(1e-7, 1 - 1e-7))  # the masked windows' logits
    head = spread.get_classifier()
    with torch.no_grad():
        a = 2.5 / float(z.std())
        head.weight.mul_(a)
        head.bias.copy_(a * (head.bias - z.mean()))
    return spread


@pytest.fixture(scope="module")
def spread_reference(spread_net: Any, windows: Tensor) -> tuple[Tensor, Tensor]:
    return variant_scorecam(spread_net, windows)


def test_the_rescaled_classifier_spreads_the_scores(spread_reference: tuple[Tensor, Tensor]) -> None:
    _, scores = spread_reference
    for s in scores:
        assert float(s.min()) < 0.2 and float(s.max()) > 0.8 and float(s.std()) > 0.15


def test_spread_scores_match_the_definition_raw_and_normalised(
    spread_net: Any, windows: Tensor, spread_reference: tuple[Tensor, Tensor]
) -> None:
    maps, _ = spread_reference
    result = scorecam(spread_net, windows, params=ScoreCamParams(chunk=100))
    assert_maps_close(result.maps, maps)
    torch.testing.assert_close(normalised(result.maps), normalised(maps), rtol=0, atol=1e-4)


@pytest.mark.parametrize("variant", [{"scores_fn": "softmax"}, {"align_corners": True}])
def test_the_spread_test_tells_the_near_variants_apart(
    spread_net: Any, windows: Tensor, spread_reference: tuple[Tensor, Tensor], variant: dict[str, Any]
) -> None:
    """A softmax across channels and ``align_corners=True`` each move the normalised map by far more than
    the tolerance above, so an implementation that used either would fail it."""
    maps, _ = spread_reference
    other, _ = variant_scorecam(spread_net, windows, **variant)
    assert float((normalised(other) - normalised(maps)).abs().max()) > 50 * 1e-4
