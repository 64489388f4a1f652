"""The paper's training augmentation: random crop, flips, brightness/contrast jitter, noise and blur.

The crop is chosen per patch (``random_offset``) so only the window is read from the memory-mapped
mosaic; the rest runs on whole batches of floats in [0, 1] on the training device, with one random draw
per image from an explicit ``torch.Generator`` so runs are repeatable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from models.errors import InvalidParameter


@dataclass(frozen=True, kw_only=True)
class AugmentParams:
    """Jitter ranges: brightness is an additive shift and contrast a factor around the image mean (both on
    the [0, 1] scale), noise the largest Gaussian std, blur the largest Gaussian sigma in pixels, applied to
    a fraction ``blur_p`` of the images."""

    flips: bool = True
    brightness: float = 0.1
    contrast: float = 0.2
    noise: float = 0.03
    blur_sigma: float = 1.5
    blur_p: float = 0.3

    def __post_init__(self) -> None:
        for name in ("brightness", "noise", "blur_sigma"):
            if getattr(self, name) < 0:
                raise InvalidParameter(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.contrast < 1:
            raise InvalidParameter(f"contrast must be in [0, 1), got {self.contrast}")
        if not 0 <= self.blur_p <= 1:
            raise InvalidParameter(f"blur_p must be in [0, 1], got {self.blur_p}")


NO_AUGMENT = AugmentParams(flips=False, brightness=0.0, contrast=0.0, noise=0.0, blur_sigma=0.0, blur_p=0.0)


def random_offset(patch: int, crop: int, generator: torch.Generator | None = None) -> tuple[int, int]:
    """Top-left (y, x) of a random ``crop`` window inside a ``patch`` x ``patch`` patch that contains the
    patch's centre pixel, the one that gave the patch its label.

    For the paper's 256 px crop of a 500 px patch every position qualifies; a smaller crop is kept on the
    labelled centre rather than drifting into whatever lies at the patch's edge.
    """
    if not 1 <= crop <= patch:
        raise InvalidParameter(f"crop must be in 1..{patch}, got {crop}")
    centre = patch // 2
    lo, hi = max(0, centre - crop + 1), min(patch - crop, centre)
    oy, ox = torch.randint(lo, hi + 1, (2,), generator=generator).tolist()
    return int(oy), int(ox)


def _uniform(n: int, lo: float, hi: float, like: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(n, generator=gen, device=gen.device if gen is not None else "cpu")
    return (lo + (hi - lo) * u).to(device=like.device, dtype=like.dtype).view(n, 1, 1, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of (B, C, H, W) with its own sigma (px, shape (B,)); sigma 0 leaves it unchanged."""
    b, c, h, w = x.shape
    radius = max(1, math.ceil(3.0 * float(sigma.max()))) if b else 1
    radius = min(radius, (min(h, w) - 1) // 2) or 1
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(device=x.device, dtype=x.dtype).clamp_min(1e-3).view(b, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)
    k = k.repeat_interleave(c, dim=0)
    flat = x.reshape(1, b * c, h, w)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, k.view(b * c, 1, 1, -1), groups=b * c)
    flat = F.conv2d(flat, k.view(b * c, 1, -1, 1), groups=b * c)
    return flat.view(b, c, h, w)


def augment_batch(
    x: torch.Tensor, params: AugmentParams, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Flip, jitter, blur and add noise to a (B, C, H, W) float batch in [0, 1]; same shape and dtype."""
    if x.ndim != 4 or not x.is_floating_point():
        raise InvalidParameter(f"expected a float (B, C, H, W) batch, got {tuple(x.shape)} {x.dtype}")
    b = x.shape[0]
    if b == 0:
        return x
    out = x
    if params.flips:
        hflip = _uniform(b, 0.0, 1.0, x, generator) < 0.5
        vflip = _uniform(b, 0.0, 1.0, x, generator) < 0.5
        out = torch.where(hflip, out.flip(-1), out)
        out = torch.where(vflip, out.flip(-2), out)
    if params.contrast > 0 or params.brightness > 0:
        mean = out.mean(dim=(1, 2, 3), keepdim=True)
        factor = _uniform(b, 1.0 - params.contrast, 1.0 + params.contrast, x, generator)
        shift = _uniform(b, -params.brightness, params.brightness, x, generator)
        out = (out - mean) * factor + mean + shift
    if params.blur_sigma > 0 and params.blur_p > 0:
        sigma = _uniform(b, 0.0, params.blur_sigma, x, generator).view(b)
        chosen = _uniform(b, 0.0, 1.0, x, generator).view(b) < params.blur_p
        sigma = torch.where(chosen, sigma, torch.zeros_like(sigma))
        if bool(chosen.any()):
            out = torch.where(chosen.view(b, 1, 1, 1), gaussian_blur(out, sigma), out)
    if params.noise > 0:
        std = _uniform(b, 0.0, params.noise, x, generator)
        noise = torch.randn(out.shape, generator=generator, device=generator.device if generator else "cpu")
        out = out + std * noise.to(device=out.device, dtype=out.dtype)
    return out.clamp(0.0, 1.0).to(x.dtype)
