"""The engine object: one network resolved once for its device, precision, batch and call shapes.

A ``Predictor`` (nnU-Net's predictor, MONAI's ``Inferer``) holds what a run would otherwise ask for again
in every function: the model and its device, the precision, the batch, whether windows are cut on the
device, the compiled CAM pass (when the worker compiled one) and the set of input shapes its network calls
have. Creating one sets the process up for its device once (:func:`worker.engine.device.ensure_prepared`),
so a Python user who loads a model and predicts gets the same allocator and cuDNN policy as the worker.

Shapes are fixed per job type and known in advance: exact windows and ScoreCAM run at the batch size or a
power of two below it (:func:`worker.engine.network_pass.bucket`), dense mode in tiles of one shape
(:func:`worker.engine.dense_tiles.tile_shape`). ``warm_up`` runs each of them once, so a worker pays for
first calls (cuDNN plans, compiled graphs) at start and never inside a job.

The exact pass (windows, then stitching) is :meth:`Predictor.exact_pass`, the one function the pipeline,
the bands of a shared mosaic and the evaluation's sigma sweep call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from models.cam.classic import WindowMaps, cam_windows, normalise_input
from models.cam.dense import windowed_squeeze_excite
from models.method import Sigma
from models.precision import PRECISIONS, autocast_unless_fp32
from worker.engine.accumulate import stitch_many
from worker.engine.dense_tiles import DenseOptions, tile_shape
from worker.engine.device import default_batch_size, default_precision, ensure_prepared
from worker.engine.network_pass import WindowBatch, WindowStats, batch_shapes, run_windows
from worker.engine.stitch import SumsSink
from worker.engine.windows import WindowGrid
from worker.io.checkpoint import LoadedModel
from worker.io.processing import StreamedImage
from worker.params import Precision, SegmentParams
from worker.progress import CancelFn, ProgressFn

log = logging.getLogger(__name__)

MODES = ("exact", "dense", "scorecam")
"""The job types whose shapes a worker warms: exact CAM windows, dense tiles, ScoreCAM."""

WARM_IMAGE = 4096
"""Side of the image whose dense tiles the warm-up runs: larger than one tile, so it has the tile shape
every mosaic of at least one tile has."""


@dataclass
class CompiledCam:
    """The compiled CAM pass of one network (features, head, CAM, min-max) and what its warm-up cost.

    ``torch.compile`` with static shapes makes one graph per batch dimension and precision, at tens of
    seconds each: the full batch, which carries nearly every window of a job, runs compiled; a job's one
    short batch (padded to a power of two) runs eagerly, its shape warmed at start like the rest.
    """

    fn: Callable[[torch.Tensor, torch.dtype], WindowMaps]
    batch_size: int
    backend: str
    warmup_s: float = 0.0
    warmed: set[tuple[int, str]] = field(default_factory=set)
    """(batch, precision) shapes run so far."""

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
    """The model with its CAM pass compiled for ``batch_size`` windows, and every exact batch shape warmed
    up in ``precision`` (the full batch compiled, the smaller ones eagerly)."""
    net = model.net

    def cam(x: torch.Tensor, dtype: torch.dtype) -> WindowMaps:
        return cam_windows(net, x, dtype=dtype)

    compiled = CompiledCam(
        fn=torch.compile(cam, backend=backend, mode=mode, dynamic=False),
        batch_size=batch_size,
        backend=backend,
    )
    out = replace(model, compiled=compiled)
    predictor = Predictor.for_model(out, precision=precision, batch_size=batch_size)
    compiled.warmup_s = predictor.warm_up(("exact",))
    log.info(
        "compiled %s for batches of %d in %s (%s): %.1f s",
        model.card.name,
        batch_size,
        precision,
        backend,
        compiled.warmup_s,
    )
    return out


PREDICTORS_ATTRIBUTE = "_rcmseg_predictors"
"""Where a network keeps its predictors: on the network itself, so they go when it goes (a cache keyed by the
network whose values hold it would keep every network, and its device memory, for good)."""


@dataclass(eq=False, kw_only=True)
class Predictor:
    """A network ready to predict: device, precision, batch, compiled pass and call shapes, resolved once."""

    model: LoadedModel
    precision: Precision
    batch_size: int
    resident: bool
    """Whether the processing image is uploaded to the device once and windows cut there (on a GPU), or
    cut on the host by a prefetch thread (on the CPU, where the image may be a memory-mapped file larger
    than memory)."""
    warmup_s: float = 0.0
    warm: set[str] = field(default_factory=set)
    """The modes whose shapes have run once in this process."""

    @classmethod
    def for_model(
        cls,
        model: LoadedModel,
        *,
        precision: Precision | None = None,
        batch_size: int | None = None,
        resident: bool | None = None,
    ) -> Predictor:
        """The predictor of ``model`` for this precision and batch (the device's defaults when not
        given), made once per process and reused, so its warm state carries from job to job."""
        device = model.device
        ensure_prepared(device)
        precision = precision or default_precision(device)
        batch_size = batch_size or default_batch_size(device, model.card.window)
        resident = device.type == "cuda" if resident is None else resident
        key = (precision, batch_size, resident, id(model.compiled))
        known: dict[tuple[object, ...], Predictor] = model.net.__dict__.setdefault(PREDICTORS_ATTRIBUTE, {})
        if key not in known:
            known[key] = cls(model=model, precision=precision, batch_size=batch_size, resident=resident)
        return known[key]

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]

    def input_shapes(self, mode: str, image_shape: tuple[int, int] | None = None) -> set[tuple[int, ...]]:
        """The (batch, channels, height, width) of every network call a job of ``mode`` can make: for
        dense mode, on an image of ``image_shape`` (processing pixels; default: a mosaic of many tiles),
        its one tile shape and the exact pass's batches of window crops that give its probabilities."""
        card = self.model.card
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        windows: set[tuple[int, ...]] = {
            (b, card.in_chans, card.window, card.window) for b in batch_shapes(self.batch_size)
        }
        if mode == "dense":
            h, w = image_shape or (WARM_IMAGE, WARM_IMAGE)
            options = DenseOptions()
            tiles: set[tuple[int, ...]] = {(1, card.in_chans, *tile_shape(h, w, card.window, options))}
            return tiles | windows if options.prob_step is not None else tiles
        return windows

    def windows(
        self,
        image: np.ndarray | StreamedImage,
        *,
        grid: WindowGrid,
        params: SegmentParams,
        stats: WindowStats,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
        on_device: bool = True,
    ) -> Iterator[WindowBatch]:
        """Every non-empty window's probability and normalised map, batch by batch, in raster order."""
        return run_windows(
            image,
            self.model,
            grid=grid,
            params=params,
            batch_size=self.batch_size,
            stats=stats,
            progress=progress,
            should_cancel=should_cancel,
            on_device=on_device,
            resident=self.resident,
        )

    def exact_pass(
        self,
        image: np.ndarray | StreamedImage,
        *,
        grid: WindowGrid,
        params: SegmentParams,
        sigmas: Sequence[Sigma],
        budget_bytes: int,
        workdir: Path,
        stats: WindowStats,
        sums: SumsSink | None = None,
        progress: ProgressFn | None = None,
        should_cancel: CancelFn | None = None,
    ) -> list[tuple[np.ndarray, int]]:
        """The heatmap and covered pixel count for each sigma from one pass over the windows; with ``sums``
        (one sigma) the undivided sums go there instead (:func:`worker.engine.accumulate.stitch_many`)."""
        batches = self.windows(
            image, grid=grid, params=params, stats=stats, progress=progress, should_cancel=should_cancel
        )
        return stitch_many(
            batches,
            grid=grid,
            sigmas=sigmas,
            budget_bytes=budget_bytes,
            workdir=workdir,
            stats=stats,
            device=self.device,
            sums=sums,
        )

    def warm_up(self, modes: Sequence[str] = MODES) -> float:
        """Run every input shape of ``modes`` once (compiling where the pass is compiled); the seconds."""
        card, device = self.model.card, self.device
        t0 = time.perf_counter()
        with torch.inference_mode():
            for mode in modes:
                for shape in sorted(self.input_shapes(mode)):
                    pixels = torch.zeros(shape, dtype=torch.uint8, device=device)
                    x = normalise_input(pixels, card.mean, card.std)
                    if device.type == "cuda":
                        x = x.contiguous(memory_format=torch.channels_last)
                    self._warm_one(mode, x)
                self.warm.add(mode)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        self.warmup_s += seconds
        return seconds

    def _warm_one(self, mode: str, x: torch.Tensor) -> None:
        net, compiled = self.model.net, self.model.compiled
        window = self.model.card.window
        if mode == "dense" and (x.shape[0] > 1 or tuple(x.shape[-2:]) == (window, window)):
            mode = "exact"  # dense mode's window crops run the exact pass
        if mode == "exact" and compiled is not None and x.shape[0] == compiled.batch_size:
            for _ in range(2):  # the second call checks that the first one's graph is reused
                compiled(x, self.dtype).maps.cpu()
        elif mode == "exact":
            cam_windows(net, x, dtype=self.dtype).maps.cpu()
        elif mode == "scorecam":  # plain and masked passes: the whole network, eagerly
            with autocast_unless_fp32(x.device.type, self.dtype):
                net(x).float().cpu()
        else:
            with windowed_squeeze_excite(net, window), autocast_unless_fp32(x.device.type, self.dtype):
                net.forward_features(x).float().cpu()  # type: ignore[operator]


def warm_worker(models: Sequence[LoadedModel], *, batch_size: int | None = None) -> float:
    """A worker's start: every shape of every mode, for each model at the device's default precision and
    the worker's batch, run once before the worker takes a job; the seconds (logged).

    On a GPU a first call of a shape costs seconds (cuDNN plans, compiled graphs); on the CPU a first
    call costs too (oneDNN's per-shape set-up: measured here, a small dense job took 4.9 x its second run
    in a fresh process).
    """
    total = 0.0
    for model in models:
        predictor = Predictor.for_model(model, batch_size=batch_size)
        seconds = predictor.warm_up(MODES)
        total += seconds
        log.info(
            "warmed %s on %s: %d shapes in %.1f s",
            model.card.name,
            model.device,
            sum(len(predictor.input_shapes(mode)) for mode in MODES),
            seconds,
        )
    return total
