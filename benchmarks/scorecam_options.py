"""Error of each ScoreCAM speed option against exact ScoreCAM, measured on a sample of real windows.

    .venv/bin/python -m benchmarks.scorecam_options --model models/zoo/phantom-b2 --mosaics data/phantoms \
        [--split test] [--max-mosaics 2] [--windows 6] [--top-k 8 16 32 64 128 256] \
        [--skip-below 0.1 0.25 0.5] [--threads 1] [--json out.json]

1. Every window of the first ``--max-mosaics`` mosaics of the split at step 100 goes through the network once
   (classic CAM pass) for its probability ``p``.
2. ``--windows`` of them are drawn (seeded): half among ``p >= 0.5``, half among ``p < 0.5``. For each, every
   channel's ScoreCAM score ``s_k`` is computed once with a plain per-channel loop (C masked forwards: exact
   ScoreCAM), and the exact map is ``ReLU(up(sum_k s_k A_k))``, min-max normalised per window as the engine
   does.
3. ``top_k``: the same sum over the k channels the option keeps (ranked by mean activation or by classifier
   weight x mean activation), every other ``s_k`` zero, which is what ``models.cam.scorecam`` computes; one
   k is checked against the library on every sampled window. Reported: max and mean |difference| of the
   normalised map and of the stitched contribution ``p x map``, the correlation, and the cost
   ``(1 + k) / (1 + C)`` of exact.
4. ``skip_below``: a skipped window's map is zero, so its contribution error is ``p x max(map) = p < t``.
   Reported over all windows of step 1: the share skipped (the saving) and the largest ``p`` skipped (the
   error actually made).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks import common
from models.cam.classic import cam_windows, minmax_per_window, normalise_input
from models.cam.scorecam import ScoreCamParams, scorecam
from worker.engine.windows import WindowGrid
from worker.evaluation.data import EvalSplit, load_split
from worker.io.checkpoint import LoadedModel, load_model
from worker.io.mosaic import open_mosaic
from worker.io.processing import processing_image

RANKS = ("activation", "cam_weight")
Window = tuple[str, int, int, float]
"""A window: its mosaic's name, its corner (y, x) and its probability."""


def parse_args() -> argparse.Namespace:
    parser = common.parser(__doc__)
    common.add_split_options(parser)
    parser.add_argument("--step", type=int, default=100)
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--top-k", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--skip-below", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    parser.add_argument("--chunk", type=int, default=32, help="masked windows per forward")
    parser.add_argument("--seed", type=int, default=0)
    common.add_threads_option(parser)
    common.add_json_option(parser)
    args = parser.parse_args()
    if args.windows < 1 or args.max_mosaics < 1:
        parser.error("--windows and --max-mosaics must be >= 1")
    return args


def window_probabilities(
    model: LoadedModel, split: EvalSplit, step: int
) -> tuple[list[Window], dict[str, np.ndarray]]:
    """1. Every window's probability from the classic CAM pass, and each mosaic's processing image."""
    card, size = model.card, model.card.window
    windows: list[Window] = []
    images = {}
    for mosaic in split.mosaics:
        image = processing_image(
            open_mosaic(mosaic.image, max_pixels=1 << 31),
            mosaic.downsample(card.pixel_size_um),
            budget_bytes=1 << 30,
            workdir=Path("."),
        )
        images[mosaic.name] = image
        grid = WindowGrid(height=image.shape[0], width=image.shape[1], window=size, step=step)
        corners = [(y, x) for y in grid.ys.tolist() for x in grid.xs.tolist()]
        for start in range(0, len(corners), 16):
            part = corners[start : start + 16]
            pixels = torch.from_numpy(np.stack([image[y : y + size, x : x + size] for y, x in part]))
            with torch.inference_mode():
                prob = cam_windows(model.net, normalise_input(pixels, card.mean, card.std)).prob
            windows += [(mosaic.name, y, x, float(p)) for (y, x), p in zip(part, prob.tolist(), strict=True)]
    return windows, images


def draw_sample(probs: np.ndarray, count: int, seed: int) -> list[int]:
    """2. ``count`` window indices, seeded: half (rounded up) among ``p >= 0.5``, the rest below."""
    rng = np.random.default_rng(seed)
    high, low = np.flatnonzero(probs >= 0.5), np.flatnonzero(probs < 0.5)
    n_high = min(len(high), (count + 1) // 2)
    picked = list(rng.choice(high, n_high, replace=False)) if n_high else []
    picked += list(rng.choice(low, min(len(low), count - n_high), replace=False)) if len(low) else []
    return [int(i) for i in picked]


def exact_scores(model: LoadedModel, window: Window, image: np.ndarray, chunk: int) -> dict[str, Any]:
    """2. One window's activations and every channel's ScoreCAM score, from one masked forward a channel."""
    net: Any = model.net
    card, size = model.card, model.card.window
    name, y, x, p = window
    pixels = torch.from_numpy(np.ascontiguousarray(image[y : y + size, x : x + size]))[None]
    xin = normalise_input(pixels, card.mean, card.std)
    t0 = time.perf_counter()
    with torch.inference_mode():
        acts = net.forward_features(xin)
        scores = torch.zeros(acts.shape[1])
        for start in range(0, acts.shape[1], chunk):
            c = torch.arange(start, min(acts.shape[1], start + chunk))
            up = F.interpolate(acts[0, c][:, None], size=(size, size), mode="bilinear", align_corners=False)
            scores[c] = torch.sigmoid(net(xin * minmax_per_window(up)).float().reshape(-1))
    sample = {"mosaic": name, "y": y, "x": x, "p": p, "acts": acts, "scores": scores, "x_in": xin,
              "exact_s": time.perf_counter() - t0}  # fmt: skip
    print(f"exact ScoreCAM {name} ({y}, {x}) p={p:.3f}: {sample['exact_s']:.1f} s", file=sys.stderr)
    return sample


def normalised(acts: torch.Tensor, scores: torch.Tensor, size: int) -> torch.Tensor:
    """The ScoreCAM map of channel scores ``scores``, upsampled and min-max normalised as the engine does."""
    weighted = torch.einsum("c,chw->hw", scores, acts[0])
    up = F.interpolate(weighted[None, None], size=(size, size), mode="bilinear", align_corners=False)
    return minmax_per_window(F.relu(up)[:, 0])[0]


def keep_top(acts: torch.Tensor, k: int, rank: str, weight: torch.Tensor) -> torch.Tensor:
    """A 0/1 mask of the ``k`` strongest channels: by mean activation, or by classifier weight x it."""
    strength = acts[0].float().mean(dim=(-2, -1))
    if rank == "cam_weight":
        strength = strength * weight
    mask = torch.zeros_like(strength)
    mask[strength.topk(min(k, strength.numel())).indices] = 1.0
    return mask


def top_k_option(
    model: LoadedModel, samples: list[dict[str, Any]], *, k: int, rank: str, check: bool
) -> tuple[dict[str, Any], float]:
    """3. One ``top_k`` option's error against exact; with ``check``, also the largest difference between
    this benchmark's top-k map and the library's."""
    net: Any = model.net
    size = model.card.window
    channels = int(samples[0]["acts"].shape[1]) if samples else 0
    weight = net.get_classifier().weight.detach()[0].float()
    d_map, d_contrib, corr = [], [], []
    library = 0.0
    for s in samples:
        exact = normalised(s["acts"], s["scores"], size)
        approx = normalised(s["acts"], s["scores"] * keep_top(s["acts"], k, rank, weight), size)
        if check:
            with torch.inference_mode():
                lib = scorecam(net, s["x_in"], params=ScoreCamParams(top_k=k, rank=rank))  # type: ignore[arg-type]
            library = max(library, float((minmax_per_window(lib.maps)[0] - approx).abs().max()))
        diff = (exact - approx).abs()
        d_map.append(diff)
        d_contrib.append(diff * s["p"])
        a, b = exact.flatten().numpy(), approx.flatten().numpy()
        corr.append(float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan"))
    option = {
        "option": f"top_k={k}, rank={rank}",
        "cost_vs_exact": round((1 + k) / (1 + channels), 4),
        "map_max_abs": round(max(float(d.max()) for d in d_map), 4),
        "map_mean_abs": round(float(np.mean([float(d.mean()) for d in d_map])), 4),
        "contribution_max_abs": round(max(float(d.max()) for d in d_contrib), 4),
        "correlation_min": None if np.isnan(corr).all() else round(float(np.nanmin(corr)), 4),
        "correlation_mean": None if np.isnan(corr).all() else round(float(np.nanmean(corr)), 4),
        "flat_maps": int(np.isnan(corr).sum()),
    }
    return option, library


def skip_below_options(probs: np.ndarray, thresholds: list[float]) -> list[dict[str, Any]]:
    """4. Per threshold: the share of windows skipped and the largest probability among them."""
    skips = []
    for t in thresholds:
        skipped = probs < t
        skips.append(
            {
                "option": f"skip_below={t:g}",
                "windows_skipped_share": round(float(skipped.mean()), 4),
                "largest_p_skipped": round(float(probs[skipped].max()), 4) if skipped.any() else 0.0,
                "bound": t,
            }
        )
    return skips


def main() -> int:
    args = parse_args()
    common.prepare("cpu", threads=args.threads)
    model = load_model(args.model, "cpu")
    card = model.card
    split = load_split(args.mosaics, split=args.split, patches=args.patches, max_mosaics=args.max_mosaics)
    t0 = time.perf_counter()
    windows, images = window_probabilities(model, split, args.step)
    cam_pass_s = time.perf_counter() - t0
    probs = np.array([w[3] for w in windows])
    picked = draw_sample(probs, args.windows, args.seed)
    samples = [exact_scores(model, windows[i], images[windows[i][0]], args.chunk) for i in picked]
    channels = int(samples[0]["acts"].shape[1]) if samples else 0
    options, check = [], 0.0
    for rank in RANKS:
        for k in args.top_k:
            option, library = top_k_option(model, samples, k=k, rank=rank, check=k == min(args.top_k))
            options.append(option)
            check = max(check, library)
    result = {
        "model": card.name,
        "arch": card.arch,
        "channels": channels,
        "mosaics": [m.name for m in split.mosaics],
        "step": args.step,
        "windows_total": len(windows),
        "windows_p_ge_0.5": int((probs >= 0.5).sum()),
        "cam_pass_s": round(cam_pass_s, 1),
        "torch_threads": torch.get_num_threads(),
        "sample": [{k: s[k] for k in ("mosaic", "y", "x", "p", "exact_s")} for s in samples],
        "exact_s_per_window": round(float(np.mean([s["exact_s"] for s in samples])), 1) if samples else None,
        "library_check_max_abs": check,
        "top_k": options,
        "skip_below": skip_below_options(probs, args.skip_below),
    }
    common.write_result(result, args.json, benchmark="scorecam-options")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
