"""``rcmseg bench``: the engine end to end on a generated mosaic, beside the bare network on the same batch.

Both figures come from one run on one machine, so their ratio says how much of the network's speed the engine
keeps after reading, window extraction, copies, stitching and export. Export is reported step by step, with
the mosaic's own pyramid (built once per mosaic, not by the job) apart, both against a bare libvips
``dzsave`` of the same mosaic in the same run.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pyvips
import torch

from models.cam.classic import cam_windows
from models.method import Sigma
from models.precision import PRECISIONS
from worker.engine.device import RunOptions, default_batch_size
from worker.engine.pipeline import segment_mosaic
from worker.io.checkpoint import LoadedModel
from worker.io.export import STEPS as EXPORT_STEPS
from worker.io.mosaic import open_mosaic
from worker.io.pyramid import build_mosaic_pyramid
from worker.params import MethodParams, Mode, Precision
from worker.provenance import cpu_name


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """What to measure: mosaic size at input resolution, the engine's parameters and the repetitions."""

    input_size: int = 12000
    downsample: int = 4
    step: int = 25
    sigma: Sigma | None = None
    """Processing px, ``"none"`` for plain averaging, ``None`` for the model card's default."""
    precision: Precision = "fp32"
    batch_size: int | None = None
    mode: Mode = "exact"
    network_iters: int = 10
    rounds: int = 2
    """Engine and bare network, each timed this many times alternately, the fastest of each kept."""


def machine_info() -> dict[str, Any]:
    cpu = cpu_name()
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def make_bench_mosaic(path: Path, size: int, seed: int = 0) -> None:
    """A speckled, patterned 8-bit mosaic with a black margin, streamed to a tiled TIFF by libvips."""
    noise = pyvips.Image.gaussnoise(size, size, mean=110, sigma=35, seed=seed)
    xy = pyvips.Image.xyz(size, size)
    pattern = ((xy[0] / 23.0).sin() * (xy[1] / 31.0).cos() * 50 + noise).cast("uchar")
    margin = size // 25
    pattern.crop(margin, 0, size - margin, size).embed(margin, 0, size, size, extend="black").tiffsave(
        str(path), tile=True, compression="deflate", bigtiff=size * size > 2**31
    )


def bare_network_rate(model: LoadedModel, *, batch_size: int, precision: str, iters: int) -> float:
    """Windows per second of the network alone (features, head, CAM) on a device-resident batch."""
    device = model.device
    s = model.card.window
    x = torch.randn(batch_size, model.card.in_chans, s, s, device=device)
    dtype = PRECISIONS[precision]
    with torch.inference_mode():
        for _ in range(2):
            cam_windows(model.net, x, dtype=dtype).maps.cpu()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            cam_windows(model.net, x, dtype=dtype).maps.cpu()
        elapsed = time.perf_counter() - t0
    return batch_size * iters / elapsed


def pyramid_seconds(mosaic: Path, work: Path, rounds: int = 2) -> dict[str, float]:
    """Seconds of the mosaic's own pyramid (built once per mosaic, not by a job) and of a bare libvips
    ``dzsave`` of the same file with its defaults (JPEG Q75, 254 px tiles), the yardstick of export.

    Each is timed ``rounds`` times, alternately, and the fastest kept: on a shared machine one figure alone
    says more about the neighbours than about the code.
    """
    best = {"mosaic_pyramid": float("inf"), "bare_dzsave": float("inf")}
    for i in range(rounds):
        t0 = time.perf_counter()
        build_mosaic_pyramid(open_mosaic(mosaic, max_pixels=1 << 40), work / f"pyramid-{i}")
        best["mosaic_pyramid"] = min(best["mosaic_pyramid"], time.perf_counter() - t0)
        t0 = time.perf_counter()
        pyvips.Image.new_from_file(str(mosaic)).dzsave(str(work / f"bare-{i}"))
        best["bare_dzsave"] = min(best["bare_dzsave"], time.perf_counter() - t0)
        shutil.rmtree(work / f"pyramid-{i}")
        shutil.rmtree(work / f"bare-{i}_files")
    return best


def export_report(timings: dict[str, float], pyramids: dict[str, float]) -> dict[str, Any]:
    """A job's export steps, the per-mosaic pyramid apart, each against a bare ``dzsave`` of the mosaic."""
    bare = pyramids["bare_dzsave"]
    export = float(timings.get("export_total", sum(timings.get(step, 0.0) for step in EXPORT_STEPS)))
    # Seconds to the microsecond: a small mosaic's bare dzsave takes a few milliseconds, and rounding it to
    # 0.1 ms would put the ratios below out of step with the times they come from.
    return {
        "steps_s": {step: round(timings[step], 6) for step in EXPORT_STEPS if step in timings},
        "job_export_s": round(export, 6),
        "mosaic_pyramid_s": round(pyramids["mosaic_pyramid"], 6),
        "bare_dzsave_s": round(bare, 6),
        "job_export_to_dzsave": round(export / bare, 3),
        "mosaic_pyramid_to_dzsave": round(pyramids["mosaic_pyramid"] / bare, 3),
    }


def read_report(timings: dict[str, float]) -> dict[str, float]:
    """The read beside the windows: the reader's seconds, those the windows waited for it, and the share
    of the read they did not wait for (1 when reading is wholly hidden behind the network)."""
    read, waited = float(timings["read_downsample"]), float(timings["read_wait"])
    return {
        "read_s": round(read, 6),
        "waited_s": round(waited, 6),
        "hidden": round(max(0.0, 1.0 - waited / read), 3) if read > 0 else 1.0,
    }


def run_bench(model: LoadedModel, config: BenchConfig, *, workdir: Path | None = None) -> dict[str, Any]:
    """Generate the mosaic, then (after a small warm-up) time the bare network and the engine alternately
    ``config.rounds`` times; the ratio is of the fastest of each."""
    device = model.device
    batch = config.batch_size or default_batch_size(device, model.card.window)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix="rcmseg-bench-", dir=workdir) as tmp:
        work = Path(tmp)
        mosaic = work / "bench.tif"
        t0 = time.perf_counter()
        make_bench_mosaic(mosaic, config.input_size)
        generate_s = time.perf_counter() - t0
        params = MethodParams.parse(asdict(config)).resolve(model.card.method_defaults())
        options = RunOptions(batch_size=batch, workdir=str(work))
        warm = work / "warm.tif"
        make_bench_mosaic(warm, model.card.window * config.downsample * 2)
        segment_mosaic(warm, model, work / "warm-out", params=params, options=options)
        # The engine and the bare network alternately, the fastest of each kept (as ``pyramid_seconds``
        # does): on a shared machine one figure alone says more about the neighbours than about the code.
        network: list[float] = []
        walls: list[float] = []
        for i in range(max(1, config.rounds)):
            network.append(
                bare_network_rate(
                    model, batch_size=batch, precision=config.precision, iters=config.network_iters
                )
            )
            t1 = time.perf_counter()
            summary = segment_mosaic(mosaic, model, work / f"out-{i}", params=params, options=options)
            walls.append(time.perf_counter() - t1)
        wall = min(walls)
        pyramids = pyramid_seconds(mosaic, work)
    windows: dict[str, int] = summary["windows"]  # type: ignore[assignment]
    processing: dict[str, int] = summary["processing"]  # type: ignore[assignment]
    computed = int(windows["computed"])  # type: ignore[index]
    network_rate = max(network)
    engine_rate = computed / wall
    result: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": machine_info(),
        "device": str(device),
        "precision": config.precision,
        "batch_size": batch,
        "model": {"name": model.card.name, "arch": model.card.arch, "window": model.card.window},
        "mosaic": {
            "input": f"{config.input_size} x {config.input_size}",
            "downsample": config.downsample,
            "processing": f"{processing['width']} x {processing['height']}",
        },
        "mode": config.mode,
        "step": config.step,
        "sigma": config.sigma,
        "windows": windows,
        "stage_seconds": summary["timings_s"],
        "wall_s": round(wall, 3),
        "generate_s": round(generate_s, 3),
        "engine_windows_per_s": round(engine_rate, 2),
        "network_windows_per_s": round(network_rate, 2),
        "rounds": {
            "network_windows_per_s": [round(rate, 2) for rate in network],
            "engine_windows_per_s": [round(computed / w, 2) for w in walls],
        },
        "engine_to_network": round(engine_rate / network_rate, 3),
        "read": read_report(summary["timings_s"]),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "export": export_report(summary["timings_s"], pyramids),
    }
    if device.type == "cuda":
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return result


def machine_slug(info: dict[str, Any], device: str) -> str:
    """A file-name-safe machine name: "Intel(R) Xeon(R) Processor", 2 cores: ``intel-xeon-processor-2c``."""
    name = info.get("gpu") if device.startswith("cuda") else f"{info['cpu']}-{info['cores']}c"
    name = re.sub(r"\((r|tm|c)\)", "", str(name), flags=re.IGNORECASE)
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def print_result(result: dict[str, Any], path: Path | None = None) -> None:
    """Print a benchmark's JSON result, and write the same text to ``path`` when one is given."""
    text = json.dumps(result, indent=2)
    print(text)
    if path is not None:
        path.write_text(text + "\n", encoding="utf-8")


def save_result(result: dict[str, Any], folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    mode = "" if result["mode"] == "exact" else f"-{result['mode']}"
    path = folder / f"{machine_slug(result['machine'], result['device'])}-{result['date']}{mode}.json"
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return path


def table(result: dict[str, Any]) -> str:
    """A readable table of one result."""
    rows = [
        ("machine", f"{result['machine'].get('gpu') or result['machine']['cpu']} ({result['device']})"),
        (
            "mosaic",
            f"{result['mosaic']['input']} / {result['mosaic']['downsample']} = "
            f"{result['mosaic']['processing']}",
        ),
        (
            "mode, step, precision, batch",
            f"{result['mode']}, {result['step']}, {result['precision']}, {result['batch_size']}",
        ),
        ("windows (computed)", str(result["windows"]["computed"])),
        *((f"  {k} s", f"{v:.3f}") for k, v in result["stage_seconds"].items()),
        ("engine windows/s", f"{result['engine_windows_per_s']:.1f}"),
        ("bare network windows/s", f"{result['network_windows_per_s']:.1f}"),
        ("engine / network", f"{result['engine_to_network']:.3f}"),
        ("read s (waited s, hidden)", "{read_s:.3f} ({waited_s:.3f}, {hidden:.2f})".format(**result["read"])),
        ("peak RSS MiB", f"{result['peak_rss_mib']:.0f}"),
    ]
    if "peak_gpu_mib" in result:
        rows.append(("peak GPU MiB", f"{result['peak_gpu_mib']:.0f}"))
    if "export" in result:
        export = result["export"]
        rows += [
            (
                "job export s (x bare dzsave)",
                f"{export['job_export_s']:.3f} ({export['job_export_to_dzsave']:.2f})",
            ),
            *((f"  {k} s", f"{v:.3f}") for k, v in export["steps_s"].items()),
            (
                "mosaic pyramid s (x bare dzsave)",
                f"{export['mosaic_pyramid_s']:.3f} ({export['mosaic_pyramid_to_dzsave']:.2f})",
            ),
            ("bare dzsave of the mosaic s", f"{export['bare_dzsave_s']:.3f}"),
        ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
