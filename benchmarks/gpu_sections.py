"""The sections of ``benchmarks.gpu_suite``: each takes the suite (device, model, scale, clock) and returns
its figures, running its items while they fit the section's time and listing the rest as skipped."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyvips
import torch

from benchmarks.precision_diff import run_precisions
from models.cam.classic import normalise_input
from models.cam.scorecam import ScoreCamParams
from models.labels import ASPECIFIC
from models.precision import PRECISIONS
from worker.bench import BenchConfig, bare_network_rate, make_bench_mosaic, run_bench
from worker.engine.accumulate import stitch_windows
from worker.engine.device import RunOptions
from worker.engine.network_pass import WindowStats, bucket, run_windows
from worker.engine.pipeline import segment_mosaic
from worker.engine.predictor import Predictor, compile_cam
from worker.engine.scorecam_windows import ScoreCamTally, scorecam_window_maps
from worker.engine.windows import WindowGrid
from worker.io.checkpoint import LoadedModel
from worker.params import MethodParams, Mode, Precision, SegmentParams

if TYPE_CHECKING:
    from benchmarks.gpu_suite import Suite


@dataclass(frozen=True, kw_only=True)
class SuiteScale:
    """How big each section's work is: the GPU run's, or the quick CPU check's."""

    input_size: int
    downsample: int
    step: int
    precisions: tuple[Precision, ...]
    batches: tuple[int, ...]
    engine_batch: int
    compiled_batches: tuple[int, ...]
    compile_backend: str
    network_iters: int
    scorecam_windows: int
    scorecam_top_k: int
    train_arch: str
    train_crop: int
    train_batch: int
    train_batches: int
    phantom_side: int
    precision_step: int
    sigma: float
    quick: bool

    @classmethod
    def for_run(cls, quick: bool) -> SuiteScale:
        if quick:
            return cls(
                input_size=480, downsample=2, step=25, precisions=("bf16", "fp16", "fp32"), batches=(16,),
                engine_batch=16, compiled_batches=(16,), compile_backend="aot_eager", network_iters=1,
                scorecam_windows=2, scorecam_top_k=4, train_arch="test_efficientnet", train_crop=64,
                train_batch=8, train_batches=3, phantom_side=160, precision_step=32, sigma=40.0, quick=True,
            )  # fmt: skip
        return cls(
            input_size=12000, downsample=4, step=25, precisions=("bf16", "fp16", "fp32"),
            batches=(256,), engine_batch=256, compiled_batches=(256,),
            compile_backend="inductor", network_iters=5, scorecam_windows=8, scorecam_top_k=64,
            train_arch="efficientnet_b2", train_crop=256, train_batch=128, train_batches=12,
            phantom_side=1024, precision_step=64, sigma=160.0, quick=False,
        )  # fmt: skip


class Items:
    """Runs a section's items while the next is expected to fit (the last item's time is the estimate)."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.last_s = 0.0
        self.results: dict[str, Any] = {}
        self.skipped: list[str] = []

    def run(self, name: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        if not self.suite.fits(self.last_s):
            self.skipped.append(name)
            return None
        t0 = time.perf_counter()
        self.results[name] = fn()
        self.last_s = time.perf_counter() - t0
        return self.results[name]

    def report(self) -> dict[str, Any]:
        return {"runs": self.results, "skipped": self.skipped}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None


def bench_mosaic(suite: Suite) -> Path:
    """The generated 12000 x 12000 (quick: small) mosaic every engine run shares, made once."""
    if "mosaic" not in suite.cache:
        path = suite.workdir / "bench.tif"
        t0 = time.perf_counter()
        make_bench_mosaic(path, suite.scale.input_size)
        suite.cache["mosaic"] = path
        suite.cache["mosaic_s"] = round(time.perf_counter() - t0, 2)
    return Path(suite.cache["mosaic"])


def compiled_model(suite: Suite, batch: int, precision: Precision) -> LoadedModel:
    """The model compiled for one batch and precision, compiled once per suite."""
    key = f"compiled-{batch}-{precision}"
    if key not in suite.cache:
        suite.cache[key] = compile_cam(
            suite.model, batch_size=batch, precision=precision, backend=suite.scale.compile_backend
        )
    model: LoadedModel = suite.cache[key]
    return model


def engine_run(
    suite: Suite, model: LoadedModel, precision: Precision, mode: Mode = "exact"
) -> dict[str, Any]:
    """The engine end to end (read, windows, stitch, export) on the shared mosaic, as ``rcmseg bench``
    runs it, without generating a mosaic each time."""
    scale, device = suite.scale, suite.device
    params = MethodParams(
        step=scale.step, precision=precision, mode=mode, downsample=scale.downsample
    ).resolve(model.card.method_defaults())
    options = RunOptions(batch_size=scale.engine_batch, workdir=str(suite.workdir))
    out = suite.workdir / f"out-{len(list(suite.workdir.glob('out-*')))}"
    warmup_s = warm(model, precision, scale.engine_batch, "dense" if mode == "dense" else "exact")
    _peak_reset(device)
    t0 = time.perf_counter()
    summary = segment_mosaic(bench_mosaic(suite), model, out, params=params, options=options)
    wall = time.perf_counter() - t0
    computed = int(summary["windows"]["computed"])
    return {
        "wall_s": round(wall, 3),
        "engine_windows_per_s": round(computed / wall, 2),
        "windows": summary["windows"],
        "stage_seconds": summary["timings_s"],
        "compiled": summary.get("compiled"),
        "warmup_s": warmup_s,
        "peak_gpu_mib": _peak_mib(device),
    }


def warm(model: LoadedModel, precision: Precision, batch: int, mode: str) -> float:
    """Every input shape of ``mode`` run once at this precision and batch, as a worker does at start, so
    that a figure measures the network and not its first calls; the seconds (0 when already warm)."""
    predictor = Predictor.for_model(model, precision=precision, batch_size=batch)
    return 0.0 if mode in predictor.warm else round(predictor.warm_up((mode,)), 3)


def engine(suite: Suite) -> dict[str, Any]:
    """``rcmseg bench`` (``run_bench``: engine, bare network, export report) in the device's precision,
    then the engine on one shared mosaic in each precision (eager; compiled in the last section)."""
    scale, items = suite.scale, Items(suite)
    default: Precision = "bf16" if suite.device.type == "cuda" else "fp32"
    config = BenchConfig(
        input_size=scale.input_size,
        downsample=scale.downsample,
        step=scale.step,
        precision=default,
        batch_size=scale.engine_batch,
        network_iters=scale.network_iters,
    )
    items.run(f"rcmseg-bench-{default}", lambda: run_bench(suite.model, config, workdir=suite.workdir))
    bench_mosaic(suite)
    for precision in scale.precisions:
        items.run(f"{precision}-eager", lambda p=precision: engine_run(suite, suite.model, p))  # type: ignore[misc]

    return {
        "mosaic": f"{scale.input_size} x {scale.input_size}",
        "step": scale.step,
        "batch_size": scale.engine_batch,
        "generate_s": suite.cache.get("mosaic_s"),
        **items.report(),
    }


def bench_image(suite: Suite) -> np.ndarray:
    """The bench mosaic at processing resolution, kept for the windows sections."""
    if "image" not in suite.cache:
        ds = suite.scale.downsample
        small = pyvips.Image.new_from_file(str(bench_mosaic(suite))).shrink(ds, ds)  # area average
        suite.cache["image"] = np.ascontiguousarray(small.numpy(), dtype=np.uint8)
    image: np.ndarray = suite.cache["image"]
    return image


def windows_rate(suite: Suite, model: LoadedModel, precision: Precision, batch: int) -> dict[str, Any]:
    """The windows stage (network and stitching on the device) over the processing image."""
    image, device = bench_image(suite), suite.device
    grid = WindowGrid(
        height=image.shape[0], width=image.shape[1], window=model.card.window, step=suite.scale.step
    )
    params = SegmentParams(step=suite.scale.step, precision=precision)
    stats = WindowStats()
    warmup_s = warm(model, precision, batch, "exact")
    _peak_reset(device)
    _sync(device)
    t0 = time.perf_counter()
    batches = run_windows(
        image, model, grid=grid, params=params, batch_size=batch, stats=stats, on_device=True,
        resident=device.type == "cuda",
    )  # fmt: skip
    stitch_windows(
        batches,
        grid=grid,
        sigma=suite.scale.sigma,
        budget_bytes=1 << 34,
        workdir=suite.workdir,
        stats=stats,
        device=device,
    )
    _sync(device)
    wall = time.perf_counter() - t0
    computed = stats.total - stats.skipped
    return {
        "windows": computed,
        "wall_s": round(wall, 3),
        "windows_per_s": round(computed / wall, 1),
        "seconds": {k: round(v, 3) for k, v in stats.seconds.items()},
        "oom_retries": stats.oom_retries,
        "warmup_s": warmup_s,
        "peak_gpu_mib": _peak_mib(device),
    }


def windows(suite: Suite) -> dict[str, Any]:
    """Every precision at every batch size, eager."""
    items = Items(suite)
    bench_image(suite)
    for precision in suite.scale.precisions:
        for batch in suite.scale.batches:
            items.run(
                f"{precision}-{batch}",
                lambda p=precision, b=batch: windows_rate(suite, suite.model, p, b),  # type: ignore[misc]
            )
    return items.report()


def compiled(suite: Suite) -> dict[str, Any]:
    """bf16 compiled (warm-up seconds apart): the engine end to end at the engine's batch, then the
    windows stage at each compiled batch size. Last of the suite: a first compilation can take minutes."""
    scale, items = suite.scale, Items(suite)

    def engine_compiled() -> dict[str, Any]:
        model = compiled_model(suite, scale.engine_batch, "bf16")
        out = engine_run(suite, model, "bf16")
        out["compile_warmup_s"] = round(model.compiled.warmup_s, 2)
        out["network_windows_per_s_eager"] = round(
            bare_network_rate(
                suite.model, batch_size=scale.engine_batch, precision="bf16", iters=scale.network_iters
            ),
            1,
        )
        return out

    def windows_compiled(batch: int) -> dict[str, Any]:
        model = compiled_model(suite, batch, "bf16")
        out = windows_rate(suite, model, "bf16", batch)
        out["compile_warmup_s"] = round(model.compiled.warmup_s, 2)
        return out

    items.run(f"engine-bf16-{scale.engine_batch}", engine_compiled)
    for batch in scale.compiled_batches:
        items.run(f"windows-bf16-{batch}", lambda b=batch: windows_compiled(b))  # type: ignore[misc]
    return {"backend": scale.compile_backend, **items.report()}


def dense(suite: Suite) -> dict[str, Any]:
    """Dense mode end to end on the bench mosaic, in the device's precision."""
    precision: Precision = "bf16" if suite.device.type == "cuda" else "fp32"
    return {"precision": precision, **engine_run(suite, suite.model, precision, mode="dense")}


def scorecam(suite: Suite) -> dict[str, Any]:
    """Exact ScoreCAM and top-k on the first non-empty windows of the processing image."""
    image, model, device = bench_image(suite), suite.model, suite.device
    s, n = model.card.window, suite.scale.scorecam_windows
    y0, x0 = (image.shape[0] - s) // 2, (image.shape[1] - s) // 2
    tiles = [image[y0 : y0 + s, x0 + i * s // 4 : x0 + i * s // 4 + s] for i in range(n)]
    tiles = [t for t in tiles if t.shape == (s, s)] or [image[:s, :s]]
    pixels = torch.from_numpy(np.stack(tiles))
    x = normalise_input(pixels.to(device), model.card.mean, model.card.std)
    precision: Precision = "bf16" if device.type == "cuda" else "fp32"
    batch = suite.scale.engine_batch
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    warmup_s = warm(model, precision, batch, "scorecam")
    network = bare_network_rate(model, batch_size=batch, precision=precision, iters=suite.scale.network_iters)
    items = Items(suite)

    def one(top_k: int | None) -> dict[str, Any]:
        # as the engine runs it: masked windows of several windows and channels in chunks of the batch,
        # every call padded to the batch or a power of two
        tally = ScoreCamTally(ScoreCamParams(top_k=top_k, chunk=batch))
        fn = scorecam_window_maps(
            model, dtype=PRECISIONS[precision], tally=tally, pad=lambda m: bucket(m, batch)
        )
        with torch.inference_mode():
            _sync(device)
            t0 = time.perf_counter()
            fn(x)
            _sync(device)
        wall = time.perf_counter() - t0
        rate = tally.counts.masked_forwards / wall
        return {"windows": len(x), "wall_s": round(wall, 3), "windows_per_s": round(len(x) / wall, 3),
                "masked_forwards_per_s": round(rate, 1), "masked_to_network": round(rate / network, 3),
                **tally.as_dict()}  # fmt: skip

    items.run(f"top-{suite.scale.scorecam_top_k}", lambda: one(suite.scale.scorecam_top_k))
    items.run("exact", lambda: one(None))
    return {
        "precision": precision,
        "batch": batch,
        "warmup_s": warmup_s,
        "network_windows_per_s": round(network, 1),
        **items.report(),
    }


PHANTOM_TRIES = 16
MIN_ASPECIFIC = 0.1
"""The precision check's phantom holds at least this fraction of aspecific tissue: on one without, every
window's probability is near 0 and the heatmaps agree trivially."""


def phantom(suite: Suite) -> tuple[np.ndarray, np.ndarray]:
    """A phantom mosaic at 2 um/px holding aspecific tissue, and its label map, rendered once."""
    from models.phantom.generate import PhantomParams, render_phantom

    if "phantom" not in suite.cache:
        side = suite.scale.phantom_side
        for index in range(PHANTOM_TRIES):  # the first of seed 0's phantoms with aspecific tissue
            p = render_phantom(PhantomParams(width=side, height=side), seed=0, index=index)
            if float((p.labels == ASPECIFIC).mean()) >= MIN_ASPECIFIC:
                break
        else:
            raise RuntimeError(f"none of {PHANTOM_TRIES} phantoms holds {MIN_ASPECIFIC:.0%} aspecific tissue")
        suite.cache["phantom"] = (p.image, p.labels)
        suite.cache["phantom_index"] = index
    image, labels = suite.cache["phantom"]
    return image, labels


def training(suite: Suite) -> dict[str, Any]:
    """Images/s of the paper's training step (SGD, batch 128, 256 px, mixed precision on CUDA) over one
    short epoch of random phantom patches; the first batch is a warm-up."""
    from models.network import create_network
    from models.training.loop import Trainer, TrainParams

    scale, device = suite.scale, suite.device
    image, labels = phantom(suite)
    crop, batch = scale.train_crop, scale.train_batch
    rng = np.random.default_rng(0)
    side = image.shape[0]
    batches = []
    for _ in range(scale.train_batches):
        ys, xs = rng.integers(0, side - crop + 1, batch), rng.integers(0, side - crop + 1, batch)
        x = np.stack([image[y : y + crop, x : x + crop] for y, x in zip(ys, xs, strict=True)])[:, None]
        y = np.array([labels[y + crop // 2, x + crop // 2] == ASPECIFIC for y, x in zip(ys, xs, strict=True)])
        batches.append((torch.from_numpy(x), torch.from_numpy(y.astype(np.float32))))
    params = TrainParams(arch=scale.train_arch, batch_size=batch, crop=crop, window=crop, epochs=1)
    net = create_network(params.arch, in_chans=1, drop_rate=params.drop_rate)
    trainer = Trainer(net, params, device=device, mean=0.4, std=0.2)
    _peak_reset(device)
    trainer.train_epoch(batches[:1])
    _sync(device)
    t0 = time.perf_counter()
    trainer.train_epoch(batches[1:])
    _sync(device)
    wall = time.perf_counter() - t0
    images = batch * (len(batches) - 1)
    return {
        "recipe": {k: v for k, v in params.as_dict().items() if k not in ("augment", "epochs")},
        "images": images,
        "wall_s_timed": round(wall, 3),
        "images_per_s": round(images / wall, 1),
        "peak_gpu_mib_training": _peak_mib(device),
    }


def precision(suite: Suite) -> dict[str, Any]:
    """bf16 and fp16 heatmaps against fp32 on a phantom with aspecific tissue (``benchmarks.precision_diff``),
    absolute and relative differences unrounded."""
    image, labels = phantom(suite)
    model = suite.model
    grid = WindowGrid(
        height=image.shape[0], width=image.shape[1], window=model.card.window, step=suite.scale.precision_step
    )
    heats, probs, seconds = run_precisions(
        image, model, grid=grid, batch=suite.scale.engine_batch, sigma=suite.scale.sigma
    )
    reference, reference_p = heats["fp32"], probs["fp32"]
    return {
        "mosaic": f"phantom {image.shape[1]} x {image.shape[0]} (2 um/px), seed 0 index "
        f"{suite.cache['phantom_index']}",
        "aspecific_fraction": float((labels == ASPECIFIC).mean()),
        "step": grid.step,
        "sigma_px": suite.scale.sigma,
        "windows": grid.count,
        "seconds": seconds,
        "fp32": {
            "heatmap_max": float(reference.max()),
            "heatmap_mean": float(reference.mean()),
            "probability_max": float(reference_p.max()) if reference_p.size else 0.0,
            "probability_mean": float(reference_p.mean()) if reference_p.size else 0.0,
        },
        "against_fp32": {
            p: _differences(heats[p], reference, probs[p], reference_p) for p in ("bf16", "fp16")
        },
    }


def _differences(heat: np.ndarray, ref: np.ndarray, prob: np.ndarray, ref_p: np.ndarray) -> dict[str, float]:
    """Absolute differences, and relative ones (to the fp32 value where it is at least 1e-3 of its
    maximum)."""
    diff, pdiff = np.abs(heat - ref), np.abs(prob - ref_p)
    floor = 1e-3 * max(float(ref.max()), 1e-12)
    where = ref >= floor
    p_floor = 1e-3 * max(float(ref_p.max()), 1e-12) if ref_p.size else 1.0
    p_where = ref_p >= p_floor
    return {
        "heatmap_max_abs": float(diff.max()),
        "heatmap_mean_abs": float(diff.mean()),
        "heatmap_max_rel": float((diff[where] / ref[where]).max()) if where.any() else 0.0,
        "probability_max_abs": float(pdiff.max()) if pdiff.size else 0.0,
        "probability_max_rel": float((pdiff[p_where] / ref_p[p_where]).max()) if p_where.any() else 0.0,
    }


SECTIONS: dict[str, Callable[[Suite], dict[str, Any]]] = {
    "engine": engine,
    "windows": windows,
    "dense": dense,
    "scorecam": scorecam,
    "training": training,
    "precision": precision,
    "compiled": compiled,
}
