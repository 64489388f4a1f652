"""Training: parameters, a loss that goes down on tiny phantoms, and the command line writing a model the
engine loads (and resuming it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from app.cli import main
from models.errors import InvalidParameter
from models.labels import ASPECIFIC
from models.network import create_network
from models.phantom import PhantomParams, render_phantom
from models.training.augment import NO_AUGMENT
from models.training.loop import Trainer, TrainParams, estimate_mean_std, init_classifier
from worker.datasets.phantom_files import write_image
from worker.io.checkpoint import load_model

WINDOW = 64


def phantom_windows(count: int = 32) -> TensorDataset:
    """64 px windows of tiny phantoms, labelled aspecific when their centre pixel's pattern is."""
    rng = np.random.default_rng(0)
    pos: list[np.ndarray] = []
    neg: list[np.ndarray] = []
    for index in (2, 5, 0):
        ph = render_phantom(PhantomParams(width=400, height=400), seed=11, index=index)
        for _ in range(300):
            y, x = (int(v) for v in rng.integers(WINDOW // 2, 400 - WINDOW // 2, 2))
            target = pos if ph.texture[y, x] == ASPECIFIC else neg if 1 <= ph.texture[y, x] <= 5 else None
            if target is not None and len(target) < count // 2:
                target.append(ph.image[y - WINDOW // 2 : y + WINDOW // 2, x - WINDOW // 2 : x + WINDOW // 2])
    if len(pos) < 4 or len(neg) < 4:
        pytest.fail("tiny phantoms lack aspecific or benign windows")
    images = torch.from_numpy(np.stack(pos + neg)).unsqueeze(1)
    labels = torch.tensor([1.0] * len(pos) + [0.0] * len(neg))
    return TensorDataset(images, labels)


def test_params_are_validated() -> None:
    assert TrainParams().lr == 1e-3 and TrainParams().batch_size == 128 and TrainParams().drop_rate == 0.75
    with pytest.raises(InvalidParameter):
        TrainParams(optimizer="rmsprop")  # type: ignore[arg-type]
    with pytest.raises(InvalidParameter):
        TrainParams(drop_rate=1.0)


def test_tiny_training_lowers_the_loss() -> None:
    torch.manual_seed(0)
    data = phantom_windows()
    params = TrainParams(
        arch="test_efficientnet",
        drop_rate=0.0,
        optimizer="adamw",
        lr=3e-3,
        batch_size=8,
        epochs=6,
        crop=WINDOW,
        window=WINDOW,
        augment=NO_AUGMENT,
    )
    loader = DataLoader(data, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    mean, std = estimate_mean_std(loader)
    net = create_network("test_efficientnet", in_chans=1)
    init_classifier(net)
    trainer = Trainer(net, params, device=torch.device("cpu"), mean=mean, std=std)
    losses = [trainer.train_epoch(loader) for _ in range(params.epochs)]
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2])
    assert trainer.epoch == params.epochs


def striped_mosaics(folder: Path, count: int = 10, side: int = 560) -> None:
    """Mosaics whose aspecific half is speckled with bright dots and whose benign half is smooth."""
    rng = np.random.default_rng(1)
    for i in range(count):
        image = np.full((side, side), 90, dtype=np.uint8) + rng.integers(0, 20, (side, side), dtype=np.uint8)
        dots = rng.random((side, side // 2)) < 0.05
        image[:, side // 2 :][dots] = 230
        labels = np.zeros((side, side), dtype=np.uint8)
        labels[:, : side // 2 - 20] = 1 + i % 5
        labels[:, side // 2 + 20 :] = ASPECIFIC
        write_image(folder / f"s{i:02d}.tif", image)
        write_image(folder / f"s{i:02d}_labels.png", labels)


def test_command_line_trains_a_model_the_engine_loads_and_resumes(tmp_path: Path) -> None:
    mosaics = tmp_path / "mosaics"
    mosaics.mkdir()
    striped_mosaics(mosaics)
    table = tmp_path / "patches.csv"
    assert main(["weak-labels", "--mosaics", str(mosaics), "--out", str(table), "--per-class", "4",
                 "--pixel-size-um", "2"]) == 0  # fmt: skip
    model = tmp_path / "model"
    common = ["train", "--patches", str(table), "--out", str(model), "--arch", "test_efficientnet",
              "--crop", "48", "--window", "64", "--batch-size", "8", "--workers", "0", "--optimizer", "adamw",
              "--lr", "0.003", "--dropout", "0", "--threads", "1", "--half"]  # fmt: skip
    assert main([*common, "--epochs", "1"]) == 0
    assert main([*common, "--epochs", "2", "--resume"]) == 0

    loaded = load_model(model)
    card = loaded.card
    assert (card.arch, card.window, card.pixel_size_um, card.positive_class) == (
        "test_efficientnet",
        64,
        2.0,
        "aspecific",
    )
    assert card.training["epochs_run"] == 2 and card.training["hyperparameters"]["crop"] == 48
    assert "trained on CPU" in card.training["note"]
    assert card.training["data"]["patients"] == {"train": 7, "val": 1, "test": 2}
    assert set(card.metrics) >= {"best_epoch", "val", "test"}
    assert card.metrics["test"]["n"] > 0 and card.metrics["test"]["accuracy"] is not None
    history = [json.loads(line) for line in (model / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert (model / "learning_curve.png").stat().st_size > 0
    assert (tmp_path / "model.state" / "last.pt").is_file()
    x = torch.zeros(1, 1, 64, 64)
    assert loaded.net(x).shape == (1, 1)
