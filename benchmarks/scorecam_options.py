"""Error of each ScoreCAM speed option against exact ScoreCAM, measured on a sample of real windows.

    .venv/bin/python benchmarks/scorecam_options.py --model models/zoo/phantom-b2 --mosaics data/phantoms \
        [--split test] [--max-mosaics 2] [--windows 6] [--top-k 8 16 32 64 128 256] \
        [--skip-below 0.1 0.25 0.5] [--threads 1] [--json out.json]

1. Every window of the first ``--max-mosaics`` mosaics of the split at step 100 goes through the network once
   (classic CAM pass) for its probability ``p``.
2. ``--windows`` of them are drawn (seeded): half among ``p >= 0.5``, half among ``p < 0.5``. For each, every
   channel's ScoreCAM score ``s_k`` is computed once with a plain per-channel loop (C masked forwards: exact
   ScoreCAM), and the exact map is ``ReLU(up(sum_k s_k A_k))``, min-max normalised per window as the engine
   does.
3. ``top_k``: the same sum over the k channels the option keeps (ranked by mean activation or by classifier
   weight x mean activation), every other ``s_k`` zero, which is what ``models.cam.scorecam`` computes; one k is
   checked against the library on every sampled window. Reported: max and mean |difference| of the
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

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--mosaics", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--patches", type=Path, default=None)
    parser.add_argument("--max-mosaics", type=int, default=2)
    parser.add_argument("--step", type=int, default=100)
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--top-k", type=int, nargs="+", default=[8, 16, 32, 64, 128, 256])
    parser.add_argument("--skip-below", type=float, nargs="+", default=[0.1, 0.25, 0.5])
    parser.add_argument("--chunk", type=int, default=32, help="masked windows per forward")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    if args.windows < 1 or args.max_mosaics < 1:
        parser.error("--windows and --max-mosaics must be >= 1")
    sys.path.insert(0, str(REPO))

    import torch
    import torch.nn.functional as F

    from models.cam.classic import cam_windows, minmax_per_window, normalise_input
    from models.cam.scorecam import ScoreCamParams, minmax_per_map, scorecam
    from worker.engine.bench import print_result
    from worker.engine.pipeline import processing_image
    from worker.engine.windows import WindowGrid
    from worker.evaluation.data import load_split
    from worker.io.checkpoint import load_model
    from worker.io.mosaic import open_mosaic

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_model(args.model, "cpu")
    net: Any = model.net
    card = model.card
    size = card.window
    split = load_split(args.mosaics, split=args.split, patches=args.patches, max_mosaics=args.max_mosaics)

    # 1. Every window's probability.
    t0 = time.perf_counter()
    windows: list[tuple[str, int, int, float]] = []
    images = {}
    for mosaic in split.mosaics:
        image = processing_image(
            open_mosaic(mosaic.image, max_pixels=1 << 31),
            mosaic.downsample(card.pixel_size_um),
            budget_bytes=1 << 30,
            workdir=Path("."),
        )
        images[mosaic.name] = image
        grid = WindowGrid(height=image.shape[0], width=image.shape[1], window=size, step=args.step)
        corners = [(y, x) for y in grid.ys.tolist() for x in grid.xs.tolist()]
        for start in range(0, len(corners), 16):
            part = corners[start : start + 16]
            pixels = torch.from_numpy(np.stack([image[y : y + size, x : x + size] for y, x in part]))
            with torch.inference_mode():
                prob = cam_windows(net, normalise_input(pixels, card.mean, card.std)).prob
            windows += [(mosaic.name, y, x, float(p)) for (y, x), p in zip(part, prob.tolist(), strict=True)]
    cam_pass_s = time.perf_counter() - t0
    probs = np.array([w[3] for w in windows])

    # 2. The sample and its exact per-channel scores.
    rng = np.random.default_rng(args.seed)
    high, low = np.flatnonzero(probs >= 0.5), np.flatnonzero(probs < 0.5)
    n_high = min(len(high), (args.windows + 1) // 2)
    picked = list(rng.choice(high, n_high, replace=False)) if n_high else []
    picked += list(rng.choice(low, min(len(low), args.windows - n_high), replace=False)) if len(low) else []
    weight = net.get_classifier().weight.detach()[0].float()
    samples = []
    for i in picked:
        name, y, x, p = windows[int(i)]
        pixels = torch.from_numpy(np.ascontiguousarray(images[name][y : y + size, x : x + size]))[None]
        xin = normalise_input(pixels, card.mean, card.std)
        t0 = time.perf_counter()
        with torch.inference_mode():
            acts = net.forward_features(xin)
            scores = torch.zeros(acts.shape[1])
            for start in range(0, acts.shape[1], args.chunk):
                c = torch.arange(start, min(acts.shape[1], start + args.chunk))
                up = F.interpolate(
                    acts[0, c][:, None], size=(size, size), mode="bilinear", align_corners=False
                )
                scores[c] = torch.sigmoid(net(xin * minmax_per_map(up)).float().reshape(-1))
        samples.append({"mosaic": name, "y": y, "x": x, "p": p, "acts": acts, "scores": scores, "x_in": xin,
                        "exact_s": time.perf_counter() - t0})  # fmt: skip
        print(f"exact ScoreCAM {name} ({y}, {x}) p={p:.3f}: {samples[-1]['exact_s']:.1f} s", file=sys.stderr)

    def normalised(acts: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        weighted = torch.einsum("c,chw->hw", scores, acts[0])
        up = F.interpolate(weighted[None, None], size=(size, size), mode="bilinear", align_corners=False)
        return minmax_per_window(F.relu(up)[:, 0])[0]

    def keep_top(acts: torch.Tensor, k: int, rank: str) -> torch.Tensor:
        strength = acts[0].float().mean(dim=(-2, -1))
        if rank == "cam_weight":
            strength = strength * weight
        mask = torch.zeros_like(strength)
        mask[strength.topk(min(k, strength.numel())).indices] = 1.0
        return mask

    # 3. top-k against exact, and the check against the library for the smallest k.
    n_channels = int(samples[0]["acts"].shape[1]) if samples else 0
    options = []
    check = 0.0
    for rank in ("activation", "cam_weight"):
        for k in args.top_k:
            d_map, d_contrib, corr = [], [], []
            for s in samples:
                exact = normalised(s["acts"], s["scores"])
                approx = normalised(s["acts"], s["scores"] * keep_top(s["acts"], k, rank))
                if k == min(args.top_k):
                    with torch.inference_mode():
                        lib = scorecam(net, s["x_in"], params=ScoreCamParams(top_k=k, rank=rank))  # type: ignore[arg-type]
                    check = max(check, float((minmax_per_window(lib.maps)[0] - approx).abs().max()))
                diff = (exact - approx).abs()
                d_map.append(diff)
                d_contrib.append(diff * s["p"])
                a, b = exact.flatten().numpy(), approx.flatten().numpy()
                corr.append(float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan"))
            options.append(
                {
                    "option": f"top_k={k}, rank={rank}",
                    "cost_vs_exact": round((1 + k) / (1 + n_channels), 4),
                    "map_max_abs": round(max(float(d.max()) for d in d_map), 4),
                    "map_mean_abs": round(float(np.mean([float(d.mean()) for d in d_map])), 4),
                    "contribution_max_abs": round(max(float(d.max()) for d in d_contrib), 4),
                    "correlation_min": None if np.isnan(corr).all() else round(float(np.nanmin(corr)), 4),
                    "correlation_mean": None if np.isnan(corr).all() else round(float(np.nanmean(corr)), 4),
                    "flat_maps": int(np.isnan(corr).sum()),
                }
            )

    # 4. skip_below over every window.
    skips = []
    for t in args.skip_below:
        skipped = probs < t
        skips.append(
            {
                "option": f"skip_below={t:g}",
                "windows_skipped_share": round(float(skipped.mean()), 4),
                "largest_p_skipped": round(float(probs[skipped].max()), 4) if skipped.any() else 0.0,
                "bound": t,
            }
        )
    result = {
        "model": card.name,
        "arch": card.arch,
        "channels": n_channels,
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
        "skip_below": skips,
    }
    print_result(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
