"""Peak resident memory of ``rcmseg segment`` on a generated 12000 x 12000 mosaic at downsample 1.

    .venv/bin/python -m benchmarks.memory_12k [--size 12000] [--step 256] [--arch efficientnet_b2] \
        [--downsample 1] [--json out.json]

The mosaic (speckled texture with a black margin) and a random-weight checkpoint are generated in a
temporary folder; the segmentation runs in a child process whose peak RSS (ru_maxrss) is printed as JSON.
The step only sets how many windows run; memory is bounded by the strip band and batch, not the window count.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyvips

from benchmarks import common
from tests.conftest import make_model_dir


def parse_args() -> argparse.Namespace:
    parser = common.parser(__doc__)
    parser.add_argument("--size", type=int, default=12000)
    parser.add_argument("--step", type=int, default=256)
    parser.add_argument("--arch", default="efficientnet_b2")
    parser.add_argument("--downsample", type=int, default=1)
    common.add_json_option(parser)
    return parser.parse_args()


def make_mosaic(path: Path, size: int) -> None:
    noise = pyvips.Image.gaussnoise(size, size, mean=110, sigma=35)
    xy = pyvips.Image.xyz(size, size)
    pattern = ((xy[0] / 23.0).sin() * (xy[1] / 31.0).cos() * 50 + noise).cast("uchar")
    margin = pattern.crop(0, 0, size - size // 20, size).embed(size // 20, 0, size, size, extend="black")
    margin.tiffsave(str(path), tile=True, compression="deflate", bigtiff=True)


def segment_command(mosaic: Path, model: Path, out: Path, *, downsample: int, step: int) -> list[str]:
    """``rcmseg segment`` in a child process of this interpreter, so its peak RSS is the child's alone."""
    return [
        sys.executable,
        "-m",
        "app.cli",
        "segment",
        str(mosaic),
        "--model",
        str(model),
        "--out",
        str(out),
        "--downsample",
        str(downsample),
        "--step",
        str(step),
        "--sigma",
        "50",
    ]


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="rcmseg-mem-") as tmp:
        work = Path(tmp)
        mosaic = work / "mosaic.tif"
        t0 = time.perf_counter()
        make_mosaic(mosaic, args.size)
        model = make_model_dir(work / "model", arch=args.arch, window=256)
        gen_s = time.perf_counter() - t0
        cmd = segment_command(mosaic, model, work / "out", downsample=args.downsample, step=args.step)
        t1 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=common.REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t1
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        summary = json.loads((work / "out" / "summary.json").read_text())
        result = {
            "mosaic": f"{args.size} x {args.size}",
            "downsample": args.downsample,
            "step": args.step,
            "arch": args.arch,
            "windows": summary["windows"],
            "peak_rss_mib": round(peak_kib / 1024, 1),
            "wall_s": round(wall, 1),
            "generate_s": round(gen_s, 1),
            "timings_s": summary["timings_s"],
        }
    common.write_result(result, args.json, benchmark="memory-12k")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
