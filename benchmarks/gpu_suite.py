"""Every GPU figure of the product in one call that ends within six minutes, written to one JSON.

    python -m benchmarks.gpu_suite [--device cuda] [--model models/zoo/phantom-b2] [--budget-s 330] \
        [--json benchmarks/results/] [--quick]

A GPU machine comes for minutes at a time, fresh each time and without a package registry, so this is the
one prepared script it runs (``make gpu-bundle`` packs it with what it needs; see ``docs/engine.md``).
Sections, in order, each guarded by its share of the time budget (an item that would not fit its section's
time is listed under ``skipped``; the JSON is rewritten after every section, so a suite cut short still
leaves what it measured):

- ``environment``: GPU name, driver, torch, CUDA and cuDNN versions.
- ``engine``: ``rcmseg bench``'s engine (``run_bench``) end to end on a 12000 x 12000 mosaic at step 25,
  then the engine on one shared mosaic in bf16, fp16 and fp32 at batch 256. Every engine figure comes
  after the shapes it runs were warmed (the seconds apart, ``warmup_s``), as on a worker.
- ``windows``: the windows stage alone (network and stitching on the 3000 x 3000 processing image, cut and
  stitched on the device) for bf16, fp16 and fp32 at batch 256.
- ``dense``: dense mode end to end on the same mosaic.
- ``scorecam``: ScoreCAM exact and top-k on a few windows as the engine runs it (masked windows in chunks
  of the batch), masked passes/s against the bare network's windows/s.
- ``cold_start``: a fresh process starts as a worker does (every input shape warmed), then runs a job, the
  same job again and a job on a mosaic of another size, for exact, dense and ScoreCAM
  (``benchmarks.gpu_processes``).
- ``service``: a Redis-compatible server (the bundle's ``valkey-server``), the API and a worker as processes;
  one mosaic uploaded and a job followed to its first heat tile, seconds per stage.
- ``training``: images/s over one short epoch of phantom patches with the paper's recipe (EfficientNet-B2,
  SGD, batch 128, 256 px, mixed precision).
- ``precision``: bf16 and fp16 heatmaps against fp32 on a phantom with aspecific tissue
  (``benchmarks.precision_diff``'s method), absolute and relative differences unrounded.
- ``compiled``: ``torch.compile`` in bf16 (warm-up apart): the engine end to end at batch 256, then the
  windows stage at batch 256. Last, because a first compilation cannot be cut short.

Every section reports its peak GPU memory. ``--quick`` runs a tiny version of each (a random 64 px
``test_efficientnet``, small mosaics, ``aot_eager`` compilation) in a few minutes on the
CPU; ``make test`` runs it (tests/benchmarks/test_gpu_suite.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from benchmarks import common, gpu_processes
from benchmarks.gpu_sections import SECTIONS, SuiteScale
from worker.bench import machine_info
from worker.io.checkpoint import LoadedModel, load_model

log = logging.getLogger(__name__)

BUDGET_S = 330.0
"""The whole suite's seconds, leaving half a minute of the six for start-up and writing."""

SHARES = {
    "engine": 0.16,
    "windows": 0.07,
    "dense": 0.04,
    "scorecam": 0.05,
    "cold_start": 0.2,
    "service": 0.16,
    "training": 0.08,
    "precision": 0.05,
    "compiled": 0.19,
}
"""Each section's share of the budget. ``compiled`` comes last: its first compilation cannot be interrupted
and may outrun its share, and by then every other figure is written."""


@dataclass
class Clock:
    """The suite's deadline and the current section's."""

    budget_s: float
    start: float = field(default_factory=time.monotonic)
    section_end: float = 0.0

    def begin(self, share_s: float) -> None:
        self.section_end = min(time.monotonic() + share_s, self.start + self.budget_s)

    def left(self) -> float:
        """Seconds left to the current section."""
        return self.section_end - time.monotonic()

    def spent(self) -> float:
        return time.monotonic() - self.start


@dataclass
class Suite:
    """What every section gets: the device, the model, the scale and a folder for its files."""

    device: torch.device
    model: LoadedModel
    scale: SuiteScale
    workdir: Path
    clock: Clock
    cache: dict[str, Any] = field(default_factory=dict)

    def fits(self, estimate_s: float) -> bool:
        """Whether an item expected to take ``estimate_s`` still fits the section's time."""
        return self.clock.left() > estimate_s


def environment(device: torch.device) -> dict[str, Any]:
    """GPU name and driver, torch, CUDA and cuDNN versions, and the host."""
    info: dict[str, Any] = {
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "host": machine_info(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=props.name,
            gpu_memory_mib=round(props.total_memory / 2**20),
            compute_capability=f"{props.major}.{props.minor}",
            driver=_driver_version(),
        )
    return info


def _driver_version() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def run_section(suite: Suite, name: str, fn: Callable[[Suite], dict[str, Any]], share_s: float) -> Any:
    """One section within its time, with its wall time and peak GPU memory; a section that fails is
    recorded with its error and the suite goes on: one broken section must not cost the others' figures
    on a machine that comes for minutes."""
    suite.clock.begin(share_s)
    if suite.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(suite.device)
    t0 = time.perf_counter()
    try:
        result = fn(suite)
    except Exception as exc:  # recorded in the JSON and logged with its traceback
        log.exception("section %s failed", name)
        result = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    if suite.device.type == "cuda":
        result["peak_gpu_mib"] = round(torch.cuda.max_memory_allocated(suite.device) / 2**20, 1)
    return result


def quick_model(folder: Path) -> Path:
    """A random-weight 64 px ``test_efficientnet`` at 2 um/px, for ``--quick``."""
    from worker.io.checkpoint import save_random_model

    return save_random_model(
        folder, arch="test_efficientnet", window=64, note="random weights for the quick suite"
    )


def run_suite(
    *, device: torch.device, model_dir: Path | None, quick: bool, budget_s: float, out: Path | None
) -> dict[str, Any]:
    """Every section in order; the result is written to ``out`` after each one."""
    clock = Clock(budget_s)
    result: dict[str, Any] = {"suite": "gpu", "quick": quick, "budget_s": budget_s}
    result["environment"] = environment(device)
    with tempfile.TemporaryDirectory(prefix="rcmseg-gpu-suite-") as tmp:
        work = Path(tmp)
        folder = quick_model(work / "model") if quick or model_dir is None else model_dir
        model = load_model(folder, device)
        result["model"] = {"name": model.card.name, "arch": model.card.arch, "window": model.card.window}
        suite = Suite(device=device, model=model, scale=SuiteScale.for_run(quick), workdir=work, clock=clock)
        suite.cache["model_dir"] = folder
        for name, fn in sections().items():
            share = SHARES[name] * budget_s
            result[name] = run_section(suite, name, fn, share)
            result["spent_s"] = round(clock.spent(), 1)
            log.info("section %s: %.1f s (suite %.1f s)", name, result[name]["wall_s"], clock.spent())
            _write(result, out, device)
    return result


def sections() -> dict[str, Callable[[Suite], dict[str, Any]]]:
    """Every section in the order it runs: those of one process, the fresh processes' before training,
    the compiled one last."""
    ordered = {name: fn for name, fn in SECTIONS.items() if name not in ("training", "precision", "compiled")}
    ordered["cold_start"] = gpu_processes.cold_start
    ordered["service"] = gpu_processes.service
    return {**ordered, **{name: SECTIONS[name] for name in ("training", "precision", "compiled")}}


def _write(result: dict[str, Any], out: Path | None, device: torch.device) -> None:
    """The result so far, to ``out`` (a folder gets the machine-named file)."""
    if out is not None:
        path = out / common.result_name("gpu-suite", device.type) if out.is_dir() else out
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


def parse_args() -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda")
    parser.add_argument("--model", type=Path, default=common.REPO / "models" / "zoo" / "phantom-b2")
    parser.add_argument("--quick", action="store_true", help="a tiny version of every section")
    parser.add_argument("--budget-s", type=float, default=None, help=f"default {BUDGET_S:g}, quick 360")
    common.add_threads_option(parser)
    common.add_json_option(parser)
    return parser.parse_args()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("pyvips").setLevel(logging.WARNING)  # libvips logs every thread pool at INFO
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the service section polls
    args = parse_args()
    device = common.prepare(args.device, threads=args.threads)
    budget = args.budget_s if args.budget_s is not None else (360.0 if args.quick else BUDGET_S)
    out = args.json
    if out is not None and not out.suffix:
        out.mkdir(parents=True, exist_ok=True)
    result = run_suite(device=device, model_dir=args.model, quick=args.quick, budget_s=budget, out=out)
    common.print_result(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
