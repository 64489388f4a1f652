"""Where the network runs and how the process is set up for it: device choice, batch size, allocator, cuDNN,
and ``RunOptions``, how (not what) a run computes.

``prepare_process`` is called once by each entry point that runs networks (the worker at start, the
command line's segment, bench, evaluate and train); nothing here happens at import.

glibc's allocator, set up for a process that runs convolutional networks on the CPU:

Most activations of a network are larger than glibc's mmap threshold, so by default each one is a fresh
mapping whose pages fault in, zeroed, on first touch and are unmapped again when freed: on a 2-core machine
that doubled the time of an EfficientNet-B2 forward pass (64 -> 29 ms a window at batch 16, 2.9 -> 1.2 s
for a 1536 px tile). ``keep_freed_memory`` serves them from the heap and keeps what is freed there, so the
next batch reuses pages that are already mapped; ``release_freed_memory`` hands the free pages back to the
OS at a point where the footprint matters (before export). Both are no-ops where glibc is absent.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import sys
from dataclasses import dataclass
from typing import Literal

import torch

from models.errors import InvalidParameter
from worker.params import Precision

log = logging.getLogger(__name__)

DeviceChoice = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How (not what) the engine computes: device placement, batch and memory budget."""

    device: DeviceChoice = "auto"
    batch_size: int | None = None
    memory_budget_bytes: int = 128 * 1024**2
    max_pixels: int = 2 * 12000 * 12000
    workdir: str | None = None


M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: keep up to 2 GiB of free heap before trimming


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and keep freed blocks for reuse; True where it took effect."""
    libc = _libc()
    if libc is None:
        return False
    with contextlib.suppress(AttributeError):
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return False


def release_freed_memory() -> None:
    """Hand memory freed by the network's activations back to the OS, so the next stage starts from the
    process's real footprint."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.malloc_trim(0)


def resolve_device(choice: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is a clear error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise InvalidParameter("device 'cuda' requested but no CUDA device is available")
    if choice not in ("cpu", "cuda"):
        raise InvalidParameter(f"device must be auto, cpu or cuda, got {choice!r}")
    return torch.device(choice)


def default_batch_size(device: torch.device, window: int) -> int:
    """A batch that keeps the device busy: large on a GPU, small on a CPU (cache-friendly)."""
    scale = (256 / window) ** 2
    return max(1, int((256 if device.type == "cuda" else 16) * scale))


def default_precision(device: torch.device) -> Precision:
    """bf16 on CUDA (tensor cores, fp32's range); fp32 on the CPU, where reduced precision is no faster."""
    return "bf16" if device.type == "cuda" else "fp32"


CUDNN_BENCHMARK = False
"""cuDNN autotuning, off. Measured on an H200 (bf16, B2, a fresh process per setting): the first call of a
new input shape took 2.3-2.8 s with it off and 4.9-6.1 s with it on, and later calls of a batch of 256
windows 24.5 ms off against 23.1 ms on (6 % faster), of a 1536 px dense tile 10.1-10.3 ms off against
9.5-17.0 ms on. With the shapes fixed and all warmed at a worker's start, autotuning would double the
warm-up for a few percent of the network, which is a third of a job."""

_PREPARED: set[str] = set()


def prepare_process(device: torch.device, *, threads: int | None = None) -> None:
    """Set up this process for networks on ``device``: torch threads, the CPU allocator, cuDNN autotuning
    (:data:`CUDNN_BENCHMARK`)."""
    if threads:
        torch.set_num_threads(threads)
    if device.type == "cpu":
        keep_freed_memory()  # activations reuse mapped pages instead of faulting in fresh ones
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = CUDNN_BENCHMARK
    _PREPARED.add(device.type)
    log.debug("process prepared for %s (%d torch threads)", device, torch.get_num_threads())


def ensure_prepared(device: torch.device) -> None:
    """:func:`prepare_process` for ``device`` unless this process already ran it (an engine object calls
    this, so code that loads a model and predicts without an entry point gets the same set-up)."""
    if device.type not in _PREPARED:
        prepare_process(device)
