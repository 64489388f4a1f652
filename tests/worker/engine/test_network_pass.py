"""The engine's network pass: a CUDA out-of-memory halves the batch and retries it, the compiled pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.cam.classic import WindowMaps, cam_windows
from worker.engine.accumulate import stitch_windows
from worker.engine.network_pass import (
    WindowStats,
    batch_shapes,
    bucket,
    map_with_retry,
    run_windows,
    smaller_bucket,
)
from worker.engine.predictor import compile_cam
from worker.engine.windows import WindowGrid
from worker.io.checkpoint import LoadedModel, load_model
from worker.params import SegmentParams


class FitsUpTo:
    """A map function (p = window mean, map = the window) that runs out of device memory above ``limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sizes: list[int] = []

    def __call__(self, x: torch.Tensor) -> WindowMaps:
        self.sizes.append(int(x.shape[0]))
        if x.shape[0] > self.limit:
            raise torch.cuda.OutOfMemoryError(f"CUDA out of memory: {x.shape[0]} windows")
        return WindowMaps(prob=torch.sigmoid(x.mean(dim=(1, 2, 3))), maps=x[:, 0, ::8, ::8] * 0 + 0.5)


def test_out_of_memory_halves_the_batch_down_to_what_fits() -> None:
    x = torch.randn(20, 1, 16, 16)
    stats = WindowStats(batch_size=16)
    fn = FitsUpTo(limit=5)
    out = map_with_retry(fn, x, stats)
    assert stats.batch_size == 4 and stats.oom_retries == 2  # 16 -> 8 -> 4
    assert fn.sizes == [16, 8, 4, 4, 4, 4, 4]  # the whole batch again, in five chunks that fit
    torch.testing.assert_close(out.prob, torch.sigmoid(x.mean(dim=(1, 2, 3))))
    map_with_retry(fn, x, stats)  # later batches start at the size that fitted
    assert stats.oom_retries == 2


def test_out_of_memory_at_one_window_is_raised() -> None:
    with pytest.raises(torch.cuda.OutOfMemoryError):
        map_with_retry(FitsUpTo(limit=0), torch.randn(3, 1, 8, 8), WindowStats(batch_size=4))


def test_padding_keeps_one_shape_and_drops_the_padding() -> None:
    fn = FitsUpTo(limit=8)
    out = map_with_retry(fn, torch.ones(5, 1, 8, 8), WindowStats(batch_size=8))
    assert fn.sizes == [8] and out.prob.shape == (5,)
    out = map_with_retry(fn, torch.ones(3, 1, 8, 8), WindowStats(batch_size=8))
    assert fn.sizes == [8, 4] and out.prob.shape == (3,)


def test_batches_run_at_the_batch_size_or_a_power_of_two() -> None:
    assert [bucket(n, 16) for n in (1, 2, 3, 5, 9, 16, 40)] == [1, 2, 4, 8, 16, 16, 16]
    assert [bucket(n, 12) for n in (5, 9, 12)] == [8, 12, 12]
    assert batch_shapes(16) == (1, 2, 4, 8, 16) and batch_shapes(12) == (1, 2, 4, 8, 12)
    assert [smaller_bucket(s) for s in (12, 8, 5, 2, 1)] == [8, 4, 4, 1, 1]


def test_out_of_memory_keeps_batches_at_powers_of_two() -> None:
    fn = FitsUpTo(limit=5)
    stats = WindowStats(batch_size=12)
    map_with_retry(fn, torch.randn(12, 1, 8, 8), stats)
    assert fn.sizes == [12, 8, 4, 4, 4] and stats.batch_size == 4


def _heat(
    model: LoadedModel, image: np.ndarray, tmp: Path, **kwargs: object
) -> tuple[np.ndarray, WindowStats]:
    grid = WindowGrid(height=image.shape[0], width=image.shape[1], window=model.card.window, step=24)
    stats = WindowStats()
    batches = run_windows(
        image, model, grid=grid, params=SegmentParams(step=24), batch_size=8, stats=stats, **kwargs
    )
    heat, _ = stitch_windows(batches, grid=grid, sigma=12.0, budget_bytes=1 << 26, workdir=tmp, stats=stats)
    return np.asarray(heat), stats


def test_a_run_that_ran_out_of_memory_gives_the_same_heatmap(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    image = np.random.default_rng(0).integers(0, 255, (200, 230), dtype=np.uint8)
    plain, _ = _heat(model, image, tmp_path)

    def cam_up_to_3(x: torch.Tensor) -> WindowMaps:
        if x.shape[0] > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return cam_windows(model.net, x)

    retried, stats = _heat(model, image, tmp_path, map_fn=cam_up_to_3)
    assert stats.oom_retries == 2 and stats.batch_size == 2
    np.testing.assert_allclose(retried, plain, atol=1e-6)


def test_compiled_cam_equals_the_eager_pass(tmp_path: Path, tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    image = np.random.default_rng(1).integers(0, 255, (150, 170), dtype=np.uint8)
    eager, _ = _heat(model, image, tmp_path)
    compiled_model = compile_cam(model, batch_size=8, precision="fp32", backend="aot_eager")
    assert compiled_model.compiled is not None and compiled_model.compiled.warmup_s > 0
    compiled, stats = _heat(compiled_model, image, tmp_path)
    assert stats.compiled
    assert compiled_model.compiled.warmed == {(8, "float32")}  # the short last batch ran eagerly
    np.testing.assert_allclose(compiled, eager, atol=1e-5)


def test_workers_compile_on_cuda_only_unless_asked(tmp_path: Path, tiny_model_dir: Path) -> None:
    from worker.queue.worker_process import WorkerConfig, compile_models

    models = {tiny_model_dir: load_model(tiny_model_dir)}
    for choice in ("auto", "off"):
        config = WorkerConfig(
            redis_url="redis://unused",
            queue="q",
            data_dir=tmp_path,
            zoo=tmp_path,
            device="cpu",
            compile=choice,
        )
        assert compile_models(models, config)[tiny_model_dir].compiled is None


def test_windows_cut_on_the_device_equal_the_host_ones(tiny_model_dir: Path) -> None:
    """The image uploaded once and cut by index (the GPU path, run here on the CPU) gives the host path's
    windows, corners, skip counts and outputs, batch by batch."""
    model = load_model(tiny_model_dir)
    image = np.random.default_rng(2).integers(1, 255, (170, 211), dtype=np.uint8)
    image[:, :90] = 0  # whole windows outside the scanned area
    image[100:, 150:] = 0
    grid = WindowGrid(height=image.shape[0], width=image.shape[1], window=model.card.window, step=20)
    runs = []
    for resident in (False, True):
        stats = WindowStats()
        batches = list(
            run_windows(
                image, model, grid=grid, params=SegmentParams(step=20), batch_size=8, stats=stats,
                resident=resident,
            )
        )  # fmt: skip
        runs.append((batches, stats))
    (host, host_stats), (device, device_stats) = runs
    assert host_stats.skipped == device_stats.skipped > 0 and host_stats.done == device_stats.done
    assert len(host) == len(device)
    for a, b in zip(host, device, strict=True):
        np.testing.assert_array_equal(a.ys, b.ys)
        np.testing.assert_array_equal(a.xs, b.xs)
        torch.testing.assert_close(a.prob, b.prob)
        torch.testing.assert_close(a.maps, b.maps)


def test_windows_of_an_image_smaller_than_one_window(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    image = np.full((30, 50), 7, dtype=np.uint8)
    grid = WindowGrid(height=30, width=50, window=model.card.window, step=20)
    out = list(
        run_windows(
            image, model, grid=grid, params=SegmentParams(step=20), batch_size=8, stats=WindowStats(),
            resident=True,
        )
    )  # fmt: skip
    assert len(out) == 1 and out[0].ys.tolist() == [0] and out[0].xs.tolist() == [0]


def _scorecam_heat(model: LoadedModel, image: np.ndarray, tmp: Path) -> tuple[np.ndarray, WindowStats]:
    grid = WindowGrid(height=image.shape[0], width=image.shape[1], window=model.card.window, step=48)
    stats = WindowStats()
    params = SegmentParams(step=48, cam="scorecam", scorecam_top_k=3)
    batches = run_windows(image, model, grid=grid, params=params, batch_size=8, stats=stats)
    heat, _ = stitch_windows(batches, grid=grid, sigma=12.0, budget_bytes=1 << 26, workdir=tmp, stats=stats)
    return np.asarray(heat), stats


def test_scorecam_masked_passes_follow_a_batch_lowered_by_out_of_memory(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    image = np.random.default_rng(1).integers(0, 255, (200, 230), dtype=np.uint8)
    plain, _ = _scorecam_heat(load_model(tiny_model_dir), image, tmp_path)
    model = load_model(tiny_model_dir)
    net = model.net
    features, forward = net.forward_features, net.forward

    def up_to_2(call):  # type: ignore[no-untyped-def]
        def run(x: torch.Tensor) -> torch.Tensor:
            if x.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return call(x)

        return run

    net.forward_features, net.forward = up_to_2(features), up_to_2(forward)  # type: ignore[method-assign]
    retried, stats = _scorecam_heat(model, image, tmp_path)
    assert stats.batch_size == 2 and stats.scorecam is not None and stats.scorecam.params.chunk == 2
    np.testing.assert_allclose(retried, plain, atol=1e-5)
