"""``rcmseg evaluate`` on tiny real files with a tiny random-weight model, checked independently."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pyvips
import torch
from sklearn.metrics import roc_auc_score

from app.cli import main
from models.errors import InvalidParameter
from models.labels import ASPECIFIC
from models.method import Sigma
from models.metrics.bootstrap import BootstrapParams, bootstrap
from tests.worker.engine.test_pipeline import tissue
from worker.datasets.table import PatchTable, write_table
from worker.engine.dense_tiles import dense_heatmap
from worker.engine.device import default_batch_size
from worker.engine.network_pass import WindowStats
from worker.engine.pipeline import segment_mosaic
from worker.engine.windows import WindowGrid
from worker.evaluation.data import load_split
from worker.evaluation.protocol import EvalParams, plan_passes
from worker.evaluation.report import read_histograms
from worker.evaluation.sweep import dense_sweep, output_stride, sweep_heatmaps
from worker.io.checkpoint import load_model
from worker.io.zoo import read_card
from worker.params import SegmentParams

SIDE = (520, 700)
"""Just taller than one 500 px weak-label patch; patch centres lie in x 250..450, y 250..270."""
SPLIT = {"m0": "train", "m1": "val", "m2": "test", "m3": "test"}


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny networks on a shared CPU: intra-op threads only add overhead."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def label_map(name: str) -> np.ndarray:
    """Unlabelled border and middle stripe; aspecific left and benign right (m3: benign only)."""
    h, w = SIDE
    labels = np.zeros((h, w), dtype=np.uint8)
    labels[20 : h - 20, 20:330] = 1 if name == "m3" else ASPECIFIC
    labels[20 : h // 2, 370 : w - 20] = 3
    labels[h // 2 : h - 20, 370 : w - 20] = 5
    return labels


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four mosaics of four patients with label maps, a manifest and a patch table recording the split."""
    root = tmp_path_factory.mktemp("eval-data")
    folder = root / "mosaics"
    folder.mkdir()
    rows: dict[str, list[Any]] = {k: [] for k in ("mosaic", "patient", "x", "y", "code", "split")}
    manifest = ["id,patient,width,height,pixel_size_um"]
    for i, name in enumerate(SPLIT):
        image = tissue(*SIDE, seed=10 + i)
        labels = label_map(name)
        image[labels == ASPECIFIC] = np.clip(image[labels == ASPECIFIC].astype(int) + 60, 1, 255)
        pyvips.Image.new_from_array(image).pngsave(str(folder / f"{name}.png"))
        pyvips.Image.new_from_array(labels).pngsave(str(folder / f"{name}_labels.png"))
        manifest.append(f"{name},P{i},{SIDE[1]},{SIDE[0]},2.0")
        for y, x in ((255, 262), (262, 300), (258, 410), (265, 440), (251, 320)):
            rows["mosaic"].append(f"{name}.png")
            rows["patient"].append(f"P{i}")
            rows["x"].append(x)
            rows["y"].append(y)
            rows["code"].append(int(labels[y, x]))
            rows["split"].append(SPLIT[name])
    (folder / "manifest.csv").write_text("\n".join(manifest) + "\n")
    table = PatchTable(
        mosaic=rows["mosaic"],
        patient=rows["patient"],
        x=np.asarray(rows["x"]),
        y=np.asarray(rows["y"]),
        code=np.asarray(rows["code"]),
        split=rows["split"],
        meta={
            "patch": 500,
            "processing_pixel_size_um": 2.0,
            "mosaics_dir": str(folder.resolve()),
            "mosaics": {f"{n}.png": {"patient": f"P{i}", "pixel_size_um": 2.0} for i, n in enumerate(SPLIT)},
            "split": {
                s: {"patients": [f"P{i}" for i, n in enumerate(SPLIT) if SPLIT[n] == s]}
                for s in SPLIT.values()
            },
        },
    )
    write_table(root / "patches.csv", table)
    return folder


@pytest.mark.parametrize("cam", ["cam", "scorecam"])
def test_restitch_equals_a_fresh_run_for_each_sigma(tmp_path: Path, tiny_model_dir: Path, cam: str) -> None:
    array = tissue(150, 170, seed=5)
    array[:, :40] = 0  # skipped windows too
    src = tmp_path / "m.png"
    pyvips.Image.new_from_array(array).pngsave(str(src))
    model = load_model(tiny_model_dir)
    params = SegmentParams(step=21, cam=cam, downsample=1, scorecam_top_k=3 if cam == "scorecam" else None)  # type: ignore[arg-type]
    sigmas: list[Sigma] = ["none", 12.0, 40.0]
    heats = sweep_heatmaps(
        array,
        model,
        grid=WindowGrid(height=150, width=170, window=64, step=21),
        params=params,
        sigmas=sigmas,
        batch_size=default_batch_size(torch.device("cpu"), 64),
        budget_bytes=1 << 28,
        workdir=tmp_path,
        stats=WindowStats(),
    )
    assert not np.allclose(heats[0], heats[2])  # the sigmas do change the map
    for sigma, heat in zip(sigmas, heats, strict=True):
        out = tmp_path / f"fresh-{sigma}"
        segment_mosaic(src, model, out, params=params.model_copy(update={"sigma": sigma}))
        fresh = pyvips.Image.new_from_file(str(out / "heatmap.tif")).numpy()
        np.testing.assert_allclose(heat, fresh, rtol=0, atol=1e-6)


def test_dense_restitch_equals_a_fresh_dense_run(tiny_model_dir: Path) -> None:
    array = tissue(150, 170, seed=6)
    array[:, :70] = 0
    model = load_model(tiny_model_dir)
    sigmas: list[Sigma] = ["none", 16.0, 48.0]
    heats = dense_sweep(array, model, sigmas=sigmas, precision="fp32", stats=WindowStats())
    for sigma, heat in zip(sigmas, heats, strict=True):
        fresh = dense_heatmap(array, model, sigma=sigma).heat
        np.testing.assert_allclose(heat, fresh, rtol=0, atol=1e-6)


def test_plan_and_params(tiny_model_dir: Path) -> None:
    model = load_model(tiny_model_dir)
    assert output_stride(model) == 32
    passes = plan_passes(EvalParams(steps=(25, 50), sigma_units=(None, 2.5), modes=("exact", "dense")), 32)
    assert [(p.cam, p.mode, p.step) for p in passes] == [
        ("cam", "exact", 25), ("cam", "exact", 50), ("scorecam", "exact", 25), ("scorecam", "exact", 50),
        ("cam", "dense", 32),
    ]  # fmt: skip
    assert [c.sigma_px for c in passes[0].configs] == [None, 80.0]
    assert passes[-1].configs[1].key == "cam/dense/step32/sigma2.5"
    assert passes[-1].configs[1].method == "cam-dense"
    fewer = plan_passes(EvalParams(steps=(25, 50, 100), scorecam_steps=(100, 50), sigma_units=(None,)), 32)
    assert [(p.cam, p.step) for p in fewer] == [
        ("cam", 25), ("cam", 50), ("cam", 100), ("scorecam", 50), ("scorecam", 100)
    ]  # fmt: skip
    for bad in ({"sigma_units": (0.0,)}, {"steps": ()}, {"cams": ("scorecam",), "modes": ("dense",)},
                {"scorecam_top_k": 0}, {"bootstrap": -1}, {"steps": (25, 25)}, {"n_bins": 75},
                {"scorecam_steps": (75,)}, {"scorecam_steps": ()},
                {"cams": ("cam",), "scorecam_steps": (25,)}):  # fmt: skip
        with pytest.raises(InvalidParameter):
            EvalParams(**bad)  # type: ignore[arg-type]


def test_split_comes_from_the_patch_table(dataset: Path, tmp_path: Path) -> None:
    split = load_split(dataset, split="test")
    assert [m.name for m in split.mosaics] == ["m2", "m3"]
    assert split.patches is not None and set(split.patches.mosaic) == {"m2.png", "m3.png"}
    assert [m.name for m in load_split(dataset, split="test", max_mosaics=1).mosaics] == ["m2"]
    assert len(load_split(dataset, split="all").mosaics) == 4
    lone = tmp_path / "lone"
    lone.mkdir()
    for f in dataset.glob("m0*"):
        (lone / f.name).write_bytes(f.read_bytes())
    with pytest.raises(InvalidParameter, match="--patches"):
        load_split(lone, split="test", pixel_size_um=2.0)
    assert load_split(lone, split="all", pixel_size_um=2.0).patches is None


def sigmoid_prob(model: Any, window: np.ndarray) -> float:
    from models.cam.classic import normalise_input

    x = normalise_input(torch.from_numpy(window)[None], model.card.mean, model.card.std)
    with torch.inference_mode():
        return float(torch.sigmoid(model.net(x)).reshape(-1)[0])


def test_evaluate_end_to_end(
    dataset: Path, tiny_model_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    code = main(
        ["evaluate", "--model", str(tiny_model_dir), "--mosaics", str(dataset), "--out", str(out),
         "--steps", "64", "128", "--sigmas", "none", "0.5", "2", "--mode", "both", "--scorecam-top-k", "3",
         "--bootstrap", "40", "--seed", "3", "--device", "cpu"]
    )  # fmt: skip
    assert code == 0
    captured = capfd.readouterr()
    assert "100%" not in captured.err  # no progress bar where stderr is not a terminal
    line = json.loads(captured.out.strip().splitlines()[-1])
    assert set(line["best"]) == {"cam", "scorecam", "cam-dense"}

    for name in ["report.json", "table2.csv", "table2.md", "per_mosaic.csv", "histograms.npz", "roc.png"]:
        assert (out / name).is_file(), name
    for method in ("cam", "scorecam", "cam-dense"):
        assert sorted(p.name for p in (out / "panels" / method).iterdir()) == ["m2.png", "m3.png"]
    report = json.loads((out / "report.json").read_text())
    runs = {r["key"]: r for r in report["runs"]}
    assert len(runs) == (2 * 2 + 1) * 3
    assert report["protocol"]["output_stride_px"] == 32 and report["protocol"]["sigma_unit"].endswith(
        "(32 px)"
    )

    # Pixel counts: aspecific positive, benign negative, unlabelled ignored, pooled over the test mosaics.
    labels = {n: label_map(n) for n in ("m2", "m3")}
    n_pos = sum(int((lab == ASPECIFIC).sum()) for lab in labels.values())
    n_neg = sum(int(((lab > 0) & (lab != ASPECIFIC)).sum()) for lab in labels.values())
    hists = read_histograms(out / "histograms.npz")
    for key, run in runs.items():
        assert (run["pooled"]["n_positive"], run["pooled"]["n_negative"]) == (n_pos, n_neg)
        assert run["per_mosaic"]["m3"]["auc"] is None and not run["per_mosaic"]["m3"]["auc_defined"]
        assert run["per_mosaic"]["m3"]["best_dice"] is None  # no aspecific pixel: Dice says nothing
        pooled = sum(hists[key][1:], hists[key][0].copy())
        assert pooled.auc() == pytest.approx(run["pooled"]["auc"], abs=1e-12)
        boot = bootstrap(hists[key], params=BootstrapParams(n_resamples=40, seed=3))
        assert list(boot.auc_ci or ()) == pytest.approx(run["bootstrap"]["auc_ci"], abs=1e-12)
    with (out / "per_mosaic.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * len(runs) and {r["auc"] for r in rows if r["mosaic"] == "m3"} == {"undefined"}
    with (out / "table2.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 2 * 3 + 3  # exact (step, sigma) rows, then the dense ones
    row = next(
        r for r in table if r["mode"] == "exact" and r["step_px"] == "64" and r["sigma_units"] == "0.5"
    )
    assert float(row["cam_auc"]) == pytest.approx(
        runs["cam/exact/step64/sigma0.5"]["pooled"]["auc"], abs=1e-6
    )
    assert float(row["scorecam_dice"]) == pytest.approx(
        runs["scorecam/exact/step64/sigma0.5"]["pooled"]["best_dice"], abs=1e-6
    )
    assert "sigma x 32 px" in (out / "table2.md").read_text()

    # The same run from scratch with rcmseg segment's engine, scored by scikit-learn and plain numpy.
    model = load_model(tiny_model_dir)
    segment_mosaic(
        dataset / "m2.png", model, tmp_path / "seg", params=SegmentParams(step=64, sigma=16.0, downsample=1)
    )
    heat = pyvips.Image.new_from_file(str(tmp_path / "seg" / "heatmap.tif")).numpy()
    lab = labels["m2"]
    keep = lab > 0
    mine = runs["cam/exact/step64/sigma0.5"]["per_mosaic"]["m2"]
    exact_auc = roc_auc_score(lab[keep] == ASPECIFIC, heat[keep])
    assert abs(mine["auc"] - exact_auc) <= mine["auc_error_bound"] + 1e-12
    truth = lab[keep] == ASPECIFIC
    dice = [
        2 * (truth & (heat[keep] >= t)).sum() / (truth.sum() + (heat[keep] >= t).sum())
        for t in mine["dice_thresholds"]
    ]
    assert mine["best_dice"] == pytest.approx(max(dice), abs=1e-12)
    assert mine["best_threshold"] == pytest.approx(mine["dice_thresholds"][int(np.argmax(dice))])
    run_t = runs["cam/exact/step64/sigma0.5"]["pooled"]["best_threshold"]
    benign = (lab > 0) & (lab != ASPECIFIC)
    assert mine["benign_flagged_at_run_threshold"] == pytest.approx(float((heat[benign] >= run_t).mean()))

    # Patch level: the test split's patches, each scored on its centred 64 px window.
    patch = report["patch_level"]
    probs = np.array([p["prob"] for p in patch["patches"]])
    truth_p = np.array([p["code"] == ASPECIFIC for p in patch["patches"]])
    assert patch["n"] == 10 and {p["mosaic"] for p in patch["patches"]} == {"m2.png", "m3.png"}
    assert patch["auc"] == pytest.approx(roc_auc_score(truth_p, probs), abs=1e-12)
    assert patch["accuracy"] == pytest.approx(float(((probs > 0.5) == truth_p).mean()))
    first = patch["patches"][0]
    image = pyvips.Image.new_from_file(str(dataset / first["mosaic"])).numpy()
    window = np.ascontiguousarray(image[first["y"] - 32 : first["y"] + 32, first["x"] - 32 : first["x"] + 32])
    assert first["prob"] == pytest.approx(sigmoid_prob(model, window), abs=1e-5)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--sigmas", "-1"], "sigma must be > 0"),
        (["--split", "holdout"], "invalid choice"),
        (["--bins", "75"], "multiple of 50"),
        (["--steps", "0"], "must be >= 1"),
        (["--scorecam-steps", "75"], "scorecam_steps must be some of the steps [25, 50, 100]"),
    ],
)
def test_bad_options_exit_2(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    argv = ["evaluate", "--model", "none", "--mosaics", str(dataset), "--out", str(tmp_path / "o"), *args]
    with pytest.raises(SystemExit) as exc:
        code = main(argv)
        raise SystemExit(code)
    assert exc.value.code == 2
    assert words in capsys.readouterr().err


def test_non_empty_output_is_refused(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    assert main(["evaluate", "--mosaics", str(dataset), "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_defaults_are_chosen_on_the_validation_split_and_written_into_the_card(
    dataset: Path, tiny_model_dir: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    common = ["evaluate", "--model", str(model), "--mosaics", str(dataset), "--cams", "cam",
              "--steps", "64", "128", "--sigmas", "none", "0.5", "2", "--bootstrap", "0", "--no-panels",
              "--device", "cpu"]  # fmt: skip
    card_before = (model / "card.json").read_text()
    # Writing defaults from the test patients is refused before anything runs.
    assert main([*common, "--out", str(tmp_path / "t"), "--split", "test", "--write-defaults"]) == 2
    assert "--split val" in capfd.readouterr().err
    assert (model / "card.json").read_text() == card_before and not (tmp_path / "t").exists()

    out = tmp_path / "val"
    assert main([*common, "--out", str(out), "--split", "val", "--write-defaults"]) == 0
    line = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    report = json.loads((out / "report.json").read_text())
    chosen = report["chosen_defaults"]
    assert report["split"]["mosaics"] == ["m1"] and chosen["split"] == "val" and chosen["mosaics"] == 1

    # The rule, re-applied to the report's rows: best Dice, then AUC (at 3 decimals), then the larger step.
    def rank(r: dict[str, Any]) -> tuple[float, float, int]:
        return (round(r["pooled"]["best_dice"], 3), round(r["pooled"]["auc"], 3), r["step_px"])

    best = max(report["runs"], key=rank)
    assert chosen["run"] == best["key"]
    card = read_card(model)
    assert card.defaults is not None and line["chosen_defaults"] == chosen["defaults"]
    sigma = "none" if best["sigma_px"] is None else best["sigma_px"]  # the report's rows say null
    assert (card.defaults.cam, card.defaults.step, card.defaults.sigma, card.defaults.threshold) == (
        "cam", best["step_px"], sigma, best["pooled"]["best_threshold"]
    )  # fmt: skip
    assert card.defaults.sigma == "none" or card.defaults.sigma == best["sigma_units"] * 32
    assert "--split val" in card.defaults.chosen_by and "P1" in card.defaults.chosen_by
    assert card.metrics["defaults_validation"]["run"] == best["key"]
    assert "Method defaults chosen on this split" in (out / "table2.md").read_text()

    # --choose-defaults alone reports the row on any split and leaves the card alone.
    card_now = (model / "card.json").read_text()
    out = tmp_path / "test"
    assert main([*common, "--out", str(out), "--split", "test", "--choose-defaults"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "warning" in report["chosen_defaults"] and (model / "card.json").read_text() == card_now
