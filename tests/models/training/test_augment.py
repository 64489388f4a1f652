"""Training augmentation keeps shape, dtype and range, is repeatable, and each part does what it says."""

from __future__ import annotations

import pytest
import torch

from models.errors import InvalidParameter
from models.training.augment import NO_AUGMENT, AugmentParams, augment_batch, gaussian_blur, random_offset


def batch(n: int = 6, side: int = 32) -> torch.Tensor:
    return torch.rand(n, 1, side, side, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_range_are_kept(dtype: torch.dtype) -> None:
    x = batch().to(dtype)
    out = augment_batch(x, AugmentParams(blur_p=1.0), torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == dtype
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.equal(out, x)


def test_same_generator_seed_gives_the_same_batch() -> None:
    x = batch()
    a = augment_batch(x, AugmentParams(), torch.Generator().manual_seed(5))
    b = augment_batch(x, AugmentParams(), torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_no_augment_is_the_identity_and_flips_only_permute() -> None:
    x = batch()
    assert torch.equal(augment_batch(x, NO_AUGMENT), x)
    flips = AugmentParams(brightness=0.0, contrast=0.0, noise=0.0, blur_sigma=0.0, blur_p=0.0)
    out = augment_batch(x, flips, torch.Generator().manual_seed(2))
    assert torch.allclose(out.flatten(1).sort().values, x.flatten(1).sort().values)


def test_blur_keeps_flat_images_flat_and_smooths_noise() -> None:
    flat = torch.full((2, 1, 16, 16), 0.4)
    assert torch.allclose(gaussian_blur(flat, torch.tensor([1.0, 2.0])), flat, atol=1e-6)
    x = batch(2)
    blurred = gaussian_blur(x, torch.tensor([0.0, 2.0]))
    assert torch.allclose(blurred[0], x[0], atol=1e-4)
    assert blurred[1].std() < x[1].std() / 2


def test_random_offset_stays_inside_the_patch() -> None:
    gen = torch.Generator().manual_seed(0)
    offsets = [random_offset(500, 256, gen) for _ in range(300)]
    assert all(0 <= oy <= 244 and 0 <= ox <= 244 for oy, ox in offsets)
    assert min(min(o) for o in offsets) < 20 and max(max(o) for o in offsets) > 224
    small = [random_offset(500, 128, gen) for _ in range(300)]
    assert all(oy <= 250 < oy + 128 and ox <= 250 < ox + 128 for oy, ox in small)
    assert random_offset(256, 256) == (0, 0)
    with pytest.raises(InvalidParameter):
        random_offset(100, 200)


def test_invalid_ranges_and_inputs_are_rejected() -> None:
    with pytest.raises(InvalidParameter):
        AugmentParams(contrast=1.5)
    with pytest.raises(InvalidParameter):
        AugmentParams(noise=-0.1)
    with pytest.raises(InvalidParameter):
        augment_batch(torch.zeros(2, 8, 8), AugmentParams())
