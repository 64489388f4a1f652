"""Reduced precision: the names a request uses and the one autocast rule every network pass follows."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_unless_fp32(
    device_type: str, dtype: torch.dtype | None
) -> contextlib.AbstractContextManager[object]:
    """Autocast to ``dtype`` on ``device_type``; a no-op for float32 or ``None``, so fp32 runs untouched."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)
