"""The engine end to end on real files with random-weight timm models, on the CPU."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch

from worker.engine.pipeline import segment_mosaic
from worker.engine.windows import window_starts
from worker.io.checkpoint import load_model
from worker.params import SegmentParams
from worker.progress import Progress

DZI_NS = "{http://schemas.microsoft.com/deepzoom/2008}"


def tissue(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.normal(110, 40, (h, w))
    yy, xx = np.mgrid[0:h, 0:w]
    base += 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    return np.clip(base, 1, 255).astype(np.uint8)


def expected_tiles(dzi: Path) -> list[Path]:
    root = ET.parse(dzi).getroot()
    tile = int(root.get("TileSize"))  # type: ignore[arg-type]
    fmt = root.get("Format")
    size = root.find(f"{DZI_NS}Size")
    assert size is not None
    w, h = int(size.get("Width")), int(size.get("Height"))  # type: ignore[arg-type]
    levels = math.ceil(math.log2(max(w, h))) + 1
    files = dzi.with_name(dzi.stem + "_files")
    assert sorted(int(p.name) for p in files.iterdir() if p.is_dir()) == list(range(levels))
    out = []
    for level in range(levels):
        scale = 2 ** (levels - 1 - level)
        lw, lh = math.ceil(w / scale), math.ceil(h / scale)
        for col in range(math.ceil(lw / tile)):
            for row in range(math.ceil(lh / tile)):
                out.append(files / str(level) / f"{col}_{row}.{fmt}")
    return out


def test_b2_end_to_end_writes_every_output(tmp_path: Path, b2_model_dir: Path) -> None:
    src = tmp_path / "mosaic.tif"
    array = tissue(280, 300)
    array[:, :20] = 0  # a black margin outside the scanned area
    pyvips.Image.new_from_array(array).tiffsave(str(src), tile=True)
    model = load_model(b2_model_dir)
    reports: list[Progress] = []
    out = tmp_path / "result"
    summary = segment_mosaic(
        src, model, out, params=SegmentParams(step=32, sigma=64.0, downsample=1), progress=reports.append
    )
    for name in [
        "heatmap.tif",
        "mask.tif",
        "heat.dzi",
        "heat_histogram.json",
        "regions.geojson",
        "summary.json",
    ]:
        assert (out / name).is_file(), name
    for layer in ["heat"]:  # the mosaic's own pyramid is not part of a result (worker/io/pyramid.py)
        tiles = expected_tiles(out / f"{layer}.dzi")
        missing = [t for t in tiles if not t.is_file()]
        assert not missing, missing[:3]
        assert len(tiles) > 9
    heat = np.asarray(pyvips.Image.new_from_file(str(out / "heatmap.tif")).numpy())
    assert heat.dtype == np.float32 and heat.shape == (280, 300)
    assert heat.min() >= 0.0 and heat.max() <= 1.0 and heat.max() > 0
    mask = np.asarray(pyvips.Image.new_from_file(str(out / "mask.tif")).numpy())
    assert set(np.unique(mask)) <= {0, 255}
    np.testing.assert_array_equal(mask == 255, heat >= summary["threshold"])  # type: ignore[operator]
    written = json.loads((out / "summary.json").read_text())
    assert written["windows"]["total"] == 2 * 3
    assert written["model"]["weights_sha256"] == model.weights_sha256
    assert written["input"]["sha256"] and written["version"]
    assert {p.stage for p in reports} == {"read", "windows", "export"}
    assert reports[-1].stage == "export" and reports[-1].done == reports[-1].total
    geo = json.loads((out / "regions.geojson").read_text())
    assert geo["type"] == "FeatureCollection"
    assert not list(tmp_path.glob(".result.tmp-*"))


def independent_heatmap(image: np.ndarray, model_dir: Path, *, step: int, sigma: float) -> np.ndarray:
    """Steps 3 to 5 of the method written plainly: one window at a time, numpy bilinear upsampling."""
    loaded = load_model(model_dir)
    net, card = loaded.net, loaded.card
    s = card.window
    weight = net.get_classifier().weight.detach().numpy()[0]
    c = (s - 1) / 2
    u = np.arange(s) - c
    gauss = np.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2 * sigma**2))
    h, w = image.shape
    num, den = np.zeros((h, w)), np.zeros((h, w))
    for y in window_starts(h, s, step):
        for x in window_starts(w, s, step):
            win = image[y : y + s, x : x + s].astype(np.float64)
            if not win.any():
                continue
            t = torch.tensor((win / 255 - card.mean[0]) / card.std[0], dtype=torch.float32)[None, None]
            with torch.no_grad():
                p = float(torch.sigmoid(net(t))[0, 0])
                feats = net.forward_features(t)[0].numpy().astype(np.float64)
            cam = np.tensordot(weight, feats, axes=1)
            span = cam.max() - cam.min()
            cam = (cam - cam.min()) / span if span > 0 else np.zeros_like(cam)
            num[y : y + s, x : x + s] += gauss * p * bilinear(cam, s)
            den[y : y + s, x : x + s] += gauss
    return np.where(den > 0, num / np.where(den > 0, den, 1), 0)


def bilinear(a: np.ndarray, size: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize (the align_corners=False convention)."""
    n = a.shape[0]
    src = np.clip((np.arange(size) + 0.5) * n / size - 0.5, 0, n - 1)
    i0 = np.floor(src).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    f = src - i0
    rows = a[i0] * (1 - f)[:, None] + a[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i1] * f[None, :]


def test_heatmap_equals_an_independent_implementation(tmp_path: Path, tiny_model_dir: Path) -> None:
    array = tissue(150, 170, seed=3)
    array[:, :88] = 0  # windows entirely outside the scan are skipped
    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(array).pngsave(str(src))
    summary = segment_mosaic(
        src,
        load_model(tiny_model_dir),
        tmp_path / "out",
        params=SegmentParams(step=21, sigma=12.0, downsample=1),
    )
    assert summary["windows"]["skipped"] > 0  # type: ignore[index]
    ours = np.asarray(pyvips.Image.new_from_file(str(tmp_path / "out" / "heatmap.tif")).numpy())
    theirs = independent_heatmap(array, tiny_model_dir, step=21, sigma=12.0)
    assert np.abs(ours - theirs).max() < 1e-3


def test_downsample_follows_the_card_pixel_size(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(tissue(203, 262)).pngsave(str(src))
    summary = segment_mosaic(
        src, load_model(tiny_model_dir), tmp_path / "out", params=SegmentParams(step=30, pixel_size_um=0.5)
    )
    assert summary["processing"] == {"width": 65, "height": 50, "downsample": 4, "pixel_size_um": 2.0}
    root = ET.parse(tmp_path / "out" / "heat.dzi").getroot()
    size = root.find(f"{DZI_NS}Size")
    assert size is not None and (size.get("Width"), size.get("Height")) == ("65", "50")
    assert summary["layers"]["mosaic"]["width"] == 262 and summary["layers"]["heat"]["scale"] == 4


def test_existing_output_is_refused_and_left_alone(tmp_path: Path, tiny_model_dir: Path) -> None:
    from models.errors import InvalidParameter

    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(tissue(64, 64)).pngsave(str(src))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InvalidParameter, match="already exists"):
        segment_mosaic(src, load_model(tiny_model_dir), out, params=SegmentParams(downsample=1))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_disk_backed_run_equals_in_memory_run(tmp_path: Path, tiny_model_dir: Path) -> None:
    from worker.engine.device import RunOptions
    from worker.io import export

    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(tissue(190, 150, seed=5)).pngsave(str(src))
    model = load_model(tiny_model_dir)
    params = SegmentParams(step=17, sigma=9.0, downsample=1)
    segment_mosaic(src, model, tmp_path / "mem", params=params)
    chunk = export.CHUNK_ROWS
    export.CHUNK_ROWS = 64  # several chunks even for this small heatmap
    try:
        segment_mosaic(
            src,
            model,
            tmp_path / "disk",
            params=params,
            options=RunOptions(memory_budget_bytes=1024, workdir=str(tmp_path)),
        )
    finally:
        export.CHUNK_ROWS = chunk
    for name in ("heatmap.tif", "mask.tif", "heatmap.ome.tif"):
        a = pyvips.Image.new_from_file(str(tmp_path / "mem" / name)).numpy()
        b = pyvips.Image.new_from_file(str(tmp_path / "disk" / name)).numpy()
        np.testing.assert_array_equal(a, b)
    # the OME-TIFF's base level is the heat itself (written from memory, or from heatmap.tif on disk)
    heat = pyvips.Image.new_from_file(str(tmp_path / "mem" / "heatmap.tif")).numpy()
    np.testing.assert_array_equal(heat, a)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("rcmseg-")]  # scratch removed


def test_a_job_stopped_while_reading_leaves_no_reader_and_no_result(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """The processing image is read beside the windows: a job canceled after its first batch, and a job on a
    file cut short, stop the reader and leave no output folder; a whole job reports the read's seconds."""
    import threading

    from worker.errors import JobCanceled, UnreadableMosaic

    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(tissue(900, 400, seed=7)).pngsave(str(src))
    model = load_model(tiny_model_dir)
    params = SegmentParams(step=16, downsample=1)
    asked: list[int] = []

    def cancel_after_first_batch() -> bool:
        asked.append(1)
        return len(asked) > 1

    with pytest.raises(JobCanceled):
        segment_mosaic(
            src, model, tmp_path / "canceled", params=params, should_cancel=cancel_after_first_batch
        )
    cut = tmp_path / "cut.png"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size * 2 // 3])
    with pytest.raises(UnreadableMosaic, match="damaged or truncated"):
        segment_mosaic(cut, model, tmp_path / "cut", params=params)
    assert not [t for t in threading.enumerate() if t.name == "image-reader"]
    assert not (tmp_path / "canceled").exists() and not (tmp_path / "cut").exists()
    timings = segment_mosaic(src, model, tmp_path / "whole", params=params)["timings_s"]
    assert timings["read_downsample"] > 0 and 0 <= timings["read_wait"] <= timings["total"]
