"""``torch.compile`` of the classic CAM pass, for workers that run many mosaics at one batch size.

The compiled function is the whole per-batch CAM (features, head, CAM, min-max) of one network. It is
compiled for a static batch shape: the engine pads a short batch (a mosaic's last one) with zero windows to
the batch size it runs at, so one graph serves every mosaic; a batch halved after a CUDA out-of-memory is a
new shape and compiles once more (the summary records the halving). Each precision is its own graph too.

The worker compiles and warms up at start (``compile_cam``), so the first job does not pay for it; the
warm-up's seconds are reported apart from any job's. ScoreCAM and dense mode run eagerly: their shapes vary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from models.cam.classic import WindowMaps, cam_windows, normalise_input
from models.precision import PRECISIONS
from worker.io.checkpoint import LoadedModel
from worker.params import Precision

log = logging.getLogger(__name__)


@dataclass
class CompiledCam:
    """The compiled CAM of one network and what its warm-up cost."""

    fn: Callable[[torch.Tensor, torch.dtype], WindowMaps]
    batch_size: int
    backend: str
    warmup_s: float = 0.0
    warmed: set[tuple[int, str]] = field(default_factory=set)
    """(batch, precision) shapes compiled so far."""

    def __call__(self, x: torch.Tensor, dtype: torch.dtype) -> WindowMaps:
        self.warmed.add((int(x.shape[0]), str(dtype).removeprefix("torch.")))
        return self.fn(x, dtype)

    def as_dict(self) -> dict[str, object]:
        return {"backend": self.backend, "batch_size": self.batch_size, "warmup_s": round(self.warmup_s, 3)}


def compile_cam(
    model: LoadedModel,
    *,
    batch_size: int,
    precision: Precision,
    backend: str = "inductor",
    mode: str | None = None,
) -> LoadedModel:
    """The model with its CAM pass compiled and warmed up at ``batch_size`` in ``precision``."""
    net, card = model.net, model.card

    def cam(x: torch.Tensor, dtype: torch.dtype) -> WindowMaps:
        return cam_windows(net, x, dtype=dtype)

    compiled = CompiledCam(
        fn=torch.compile(cam, backend=backend, mode=mode, dynamic=False),
        batch_size=batch_size,
        backend=backend,
    )
    device = next(net.parameters()).device
    pixels = torch.zeros((batch_size, card.in_chans, card.window, card.window), dtype=torch.uint8)
    t0 = time.perf_counter()
    with torch.inference_mode():
        x = normalise_input(pixels.to(device), card.mean, card.std)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        for _ in range(2):  # the second call checks that the first one's graph is reused
            compiled(x, PRECISIONS[precision]).maps.cpu()
    compiled.warmup_s = time.perf_counter() - t0
    log.info(
        "compiled %s for batches of %d in %s (%s): %.1f s",
        card.name,
        batch_size,
        precision,
        backend,
        compiled.warmup_s,
    )
    return replace(model, compiled=compiled)
