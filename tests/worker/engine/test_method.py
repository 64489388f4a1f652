"""The paper's method by default: card defaults, one validation, the weight floor, pixel sizes from files,
export failures named, and a summary that says what ran and for what it is fit."""

from __future__ import annotations

import json
import math
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pyvips
import torch
import torch.nn.functional as F

from models.card import MethodDefaults
from models.errors import InvalidParameter
from tests.conftest import REPO, make_model_dir
from tests.worker.engine.test_pipeline import tissue
from worker.datasets.phantom_files import write_image
from worker.engine.pipeline import segment_mosaic
from worker.engine.stitch import WEIGHT_FLOOR, gaussian_weights
from worker.engine.windows import WindowGrid
from worker.io.checkpoint import load_model
from worker.io.mosaic import probe
from worker.io.resolution import recorded_pixel_size_um
from worker.params import MethodParams, SegmentParams
from worker.plan import plan_mosaic

DEFAULTS = MethodDefaults(cam="cam", step=16, sigma=12.0, threshold=0.4)


@pytest.fixture(scope="module")
def carded_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random-weight model with method defaults and an intended use on its card."""
    folder = make_model_dir(tmp_path_factory.mktemp("models") / "carded", seed=3)
    card = json.loads((folder / "card.json").read_text())
    card["defaults"] = DEFAULTS.model_dump()
    card["intended_use"] = "tests only"
    (folder / "card.json").write_text(json.dumps(card))
    return folder


def heat_of(folder: Path) -> np.ndarray:
    return np.asarray(pyvips.Image.new_from_file(str(folder / "heatmap.tif")).numpy())


def independent_heatmap(model_dir: Path, image: np.ndarray, *, step: int, sigma: float) -> np.ndarray:
    """The paper's formula written out window by window, in float64, sharing no engine code: for every
    window of the flush grid, p x upsampled min-max CAM, weighted by exp(-d^2 / 2 sigma^2) from the window's
    centre, summed and divided by the summed weights."""
    model = load_model(model_dir)
    net, card = model.net, model.card
    s = card.window
    h, w = image.shape

    def starts(n: int) -> list[int]:
        last = max(n - s, 0)
        out = list(range(0, last + 1, step))
        return out if out[-1] == last else [*out, last]

    padded = np.zeros((max(h, s), max(w, s)), dtype=np.uint8)
    padded[:h, :w] = image
    num = np.zeros(padded.shape)
    den = np.zeros(padded.shape)
    u = np.arange(s) - (s - 1) / 2
    g = np.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2 * sigma**2))
    weight = net.get_classifier().weight.detach()[0]  # type: ignore[operator]
    for y in starts(h):
        for x in starts(w):
            tile = padded[y : y + s, x : x + s]
            if not tile.any():
                continue
            x_in = (torch.from_numpy(tile.astype(np.float32) / 255.0)[None, None] - card.mean[0]) / card.std[
                0
            ]
            with torch.inference_mode():
                feats = net.forward_features(x_in)  # type: ignore[operator]
                p = torch.sigmoid(net.forward_head(feats)).item()  # type: ignore[operator]
                cam = torch.einsum("c,chw->hw", weight, feats[0])
            cam = (cam - cam.min()) / (cam.max() - cam.min()) if cam.max() > cam.min() else cam * 0
            up = F.interpolate(cam[None, None], size=(s, s), mode="bilinear", align_corners=False)[0, 0]
            num[y : y + s, x : x + s] += p * up.double().numpy() * g
            den[y : y + s, x : x + s] += g
    heat = np.where(den > 0, num / np.where(den > 0, den, 1), 0)
    return np.clip(heat[:h, :w], 0, 1)


def test_nothing_given_runs_the_cards_method_and_equals_the_formula(
    tmp_path: Path, carded_model_dir: Path
) -> None:
    image = tissue(96, 112, seed=5)
    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(image).pngsave(str(src))
    model = load_model(carded_model_dir)
    params = MethodParams(downsample=1).resolve(model.card.method_defaults())
    assert (params.step, params.sigma, params.threshold) == (16, 12.0, 0.4)
    assert params.defaults_from == ("cam", "step", "sigma", "threshold")
    summary = segment_mosaic(src, model, tmp_path / "out", params=params)
    expected = independent_heatmap(carded_model_dir, image, step=16, sigma=12.0)
    np.testing.assert_allclose(heat_of(tmp_path / "out"), expected, atol=2e-5)
    assert summary["method"] == {
        "cam": {"value": "cam", "source": "card"},
        "step": {"value": 16, "source": "card"},
        "sigma": {"value": 12.0, "source": "card"},
        "threshold": {"value": 0.4, "source": "card"},
    }
    assert summary["intended_use"] == "tests only"
    assert any("intended use: tests only" in note for note in summary["notes"])


def test_a_request_overrides_the_card_and_none_is_plain_averaging(carded_model_dir: Path) -> None:
    defaults = load_model(carded_model_dir).card.method_defaults()
    params = MethodParams(sigma="none", step=8).resolve(defaults)
    assert params.sigma == "none" and params.step == 8
    assert "sigma" not in params.defaults_from and "step" not in params.defaults_from
    assert params.identity() == SegmentParams(sigma="none", step=8, threshold=0.4).identity()


def test_a_card_without_defaults_runs_the_papers_gaussian() -> None:
    from models.card import ModelCard

    card = ModelCard(
        name="c", arch="a", in_chans=1, num_classes=1, window=256, pixel_size_um=2.0, mean=[0.5], std=[0.2],
        positive_class="aspecific", threshold=0.5,
    )  # fmt: skip
    defaults = card.method_defaults()
    assert (defaults.cam, defaults.step, defaults.sigma) == ("cam", 25, 160.0)  # 5 x the 32 px stride


def test_every_covered_pixel_has_a_finite_heat_at_sigma_1_px(tmp_path: Path, b2_model_dir: Path) -> None:
    # Without a floor the float32 tails underflow to zero far from a window's centre and those pixels
    # dropped out of the heatmap and of the covered area.
    g = np.exp(-((np.arange(256) - 127.5) ** 2) / 2)
    assert (np.outer(g, g).astype(np.float32) == 0).any()
    assert gaussian_weights(256, 1.0).min() == np.float32(WEIGHT_FLOOR)
    image = tissue(400, 460, seed=2)
    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(image).pngsave(str(src))
    params = SegmentParams(step=100, sigma=1.0, downsample=1)
    summary = segment_mosaic(src, load_model(b2_model_dir), tmp_path / "out", params=params)
    heat = heat_of(tmp_path / "out")
    assert np.isfinite(heat).all()
    grid = WindowGrid(height=400, width=460, window=256, step=100)
    covered = np.zeros((400, 460), dtype=bool)
    for y in grid.ys:
        for x in grid.xs:
            covered[y : y + 256, x : x + 256] = True
    assert summary["scanned_area_mm2"] == pytest.approx(covered.sum() * (2.0e-3) ** 2)


@pytest.mark.parametrize("sigma", [16.0, 32.0, 64.0])
def test_the_floor_leaves_sigmas_of_16_px_and_more_exact(sigma: float) -> None:
    u = np.arange(256, dtype=np.float64) - 127.5
    g = np.exp(-(u**2) / (2 * sigma**2))
    assert np.array_equal(gaussian_weights(256, sigma), np.outer(g, g).astype(np.float32))


def test_phantom_tiffs_are_read_at_their_recorded_pixel_size(tmp_path: Path) -> None:
    write_image(tmp_path / "p.tif", tissue(64, 64), pixel_size_um=2.0)
    assert probe(tmp_path / "p.tif", max_pixels=10**8).pixel_size_um == pytest.approx(2.0)
    plan = plan_mosaic(
        SegmentParams(), width=1750, height=1750, file_pixel_size_um=2.0, window=256, model_pixel_size_um=2.0
    )
    assert (plan.downsample, plan.pixel_size_source) == (1, "file")
    assert WindowGrid(height=plan.height, width=plan.width, window=256, step=50).count == 31 * 31


def test_a_file_without_a_resolution_is_assumed_at_half_a_micron(tmp_path: Path, real_tile: Path) -> None:
    header = probe(real_tile, max_pixels=10**8)
    assert header.pixel_size_um is None
    plan = plan_mosaic(SegmentParams(), width=1024, height=1024, file_pixel_size_um=None, window=256,
                       model_pixel_size_um=2.0)  # fmt: skip
    assert (plan.downsample, plan.pixel_size_source, plan.input_pixel_size_um) == (4, "assumed", 0.5)
    request = plan_mosaic(SegmentParams(pixel_size_um=1.0), width=1024, height=1024, file_pixel_size_um=2.0,
                          window=256, model_pixel_size_um=2.0)  # fmt: skip
    assert (request.downsample, request.pixel_size_source) == (2, "request")


@pytest.mark.parametrize(
    ("params", "width", "message"),
    [
        (SegmentParams(step=400), 3000, "step: must be at most the model's window (256 px), got 400"),
        (SegmentParams(pixel_size_um=1e-300), 3000, "needs a downsample factor above 64"),
        (SegmentParams(pixel_size_um=2.2e-311), 3000, "needs a downsample factor above 64"),
        (
            SegmentParams(),
            1,
            "the mosaic (1 x 1 px) is smaller than one processing pixel at downsample factor 4",
        ),
    ],
)
def test_one_validation_refuses_what_would_fail_or_mislead(
    params: SegmentParams, width: int, message: str
) -> None:
    with pytest.raises(InvalidParameter) as err:
        plan_mosaic(
            params, width=width, height=width, file_pixel_size_um=None, window=256, model_pixel_size_um=2.0
        )
    assert message in str(err.value) and len(str(err.value)) < 200


@pytest.mark.parametrize(
    "values", [{"step": True}, {"sigma": math.nan}, {"threshold": math.inf}, {"pixel_size_um": "x"}]
)
def test_parameters_are_strictly_typed_and_finite(values: dict[str, object]) -> None:
    with pytest.raises(InvalidParameter, match=next(iter(values))):
        MethodParams.parse(values)


def test_segment_refuses_a_step_wider_than_the_window_before_loading_the_model(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "segment", str(REPO.parent / "shared/data/rcm_tile_isic_16bit.png"),
         "--out", str(tmp_path / "out"), "--step", "400"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "step: must be at most the model's window (256 px), got 400" in done.stderr
    assert not (tmp_path / "out").exists()


def _small_files() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_a_failed_export_is_export_failed_with_the_os_reason(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(tissue(300, 300, seed=4)).pngsave(str(src))
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "segment", str(src), "--out", str(tmp_path / "out"),
         "--model", str(tiny_model_dir), "--downsample", "1", "--sigma", "8"],
        capture_output=True, text=True, cwd=REPO, timeout=300, preexec_fn=_small_files,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "writing the results failed" in last and "damaged" not in last, last
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_a_result_from_few_windows_says_so(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(tissue(64, 64)).pngsave(str(src))
    summary = segment_mosaic(
        src, load_model(tiny_model_dir), tmp_path / "out", params=SegmentParams(downsample=1, sigma=8.0)
    )
    assert summary["windows"]["computed"] == 1
    assert any("computed from 1 window of 64 px only" in note for note in summary["notes"])
    assert summary["input"]["pixel_size_source"] == "assumed"


def test_the_result_folder_follows_the_umask_and_keeps_the_users_file_name(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    import os
    import stat

    src = tmp_path / "source.png"
    pyvips.Image.new_from_array(tissue(64, 64)).pngsave(str(src))
    old = os.umask(0o027)
    try:
        summary = segment_mosaic(
            src,
            load_model(tiny_model_dir),
            tmp_path / "out",
            params=SegmentParams(downsample=1, sigma=8.0),
            source_name="patient 7 DEJ.png",
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750
    assert summary["input"]["name"] == "patient 7 DEJ.png"


def test_the_tiffs_record_their_processing_pixel_size(tmp_path: Path, tiny_model_dir: Path) -> None:
    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(tissue(64, 64)).pngsave(str(src))
    segment_mosaic(src, load_model(tiny_model_dir), tmp_path / "out", params=SegmentParams(downsample=1))
    for name in ("heatmap.tif", "mask.tif"):
        tiff = pyvips.Image.new_from_file(str(tmp_path / "out" / name))
        assert recorded_pixel_size_um(tiff) == pytest.approx(2.0), name
