"""One training run of the aspecific-vs-benign patch classifier on a weak-label patch table.

Writes the model folder in the checkpoint format the engine loads (``model.safetensors`` + ``card.json``)
with the best validation epoch's weights, plus ``metrics.jsonl`` and ``learning_curve.png``
(:mod:`worker.training.logs`); the resumable state (optimiser, schedule, random streams) goes to the state
folder. The loops themselves are :mod:`models.training.loop`, which touches no file.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from models.card import ModelCard
from models.errors import InvalidParameter
from models.network import create_network
from models.training import PAPER_EPOCHS
from models.training.loop import EpochReport, Trainer, TrainParams, estimate_mean_std, fit, init_classifier
from worker.datasets.patch_dataset import PatchDataset, cache_mosaics
from worker.datasets.table import read_table, table_counts
from worker.io.checkpoint import load_model, save_model
from worker.provenance import code_version, cpu_name
from worker.training.logs import write_logs

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True, kw_only=True)
class TrainingSpec:
    """What one run reads and writes, besides its hyperparameters: the patch table, the model folder ``out``
    (its card's ``name``, default the folder's), DataLoader ``workers``, fp16 weights (``half``), the mosaic
    ``cache`` (default beside the table) and the ``state_dir`` (default ``OUT.state``)."""

    patches: Path
    out: Path
    params: TrainParams
    device: torch.device
    name: str | None = None
    workers: int = 2
    half: bool = False
    cache: Path | None = None
    state_dir: Path | None = None
    resume: bool = False
    note: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise InvalidParameter(f"--workers must be >= 0, got {self.workers}")


def hardware(device: torch.device) -> str:
    """The card's ``device``: the GPU's name, or the CPU's with the torch threads used."""
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    return f"CPU {cpu_name()}, {torch.get_num_threads()} torch threads"


class TrainingRun:
    """The data, loaders and card of one run, and what is written after each epoch."""

    def __init__(self, spec: TrainingSpec) -> None:
        self.spec, self.started = spec, time.monotonic()
        self.params, self.device = spec.params, spec.device
        torch.manual_seed(self.params.seed)
        self.table = read_table(spec.patches)
        self.splits = {s: self.table.select(s) for s in SPLITS}
        for name, part in self.splits.items():
            if len(part) == 0:
                raise InvalidParameter(f"{spec.patches}: the {name} split has no patches")
        cache = spec.cache or spec.patches.with_name(f"{spec.patches.stem}_cache")
        mosaics = len(set(self.table.mosaic))
        # disable=None: no bar when stderr is not a terminal
        with tqdm(total=mosaics, unit="mosaic", desc="cache", disable=None) as bar:
            self.sources = cache_mosaics(self.table, cache, on_mosaic=lambda _n: bar.update())
        self.state_dir: Path = spec.state_dir or spec.out.with_name(f"{spec.out.name}.state")
        self.epoch_bar: Any = None

    def loader(self, split: str, *, train: bool, epoch: int = 0) -> DataLoader[Any]:
        """Shuffled random crops for training (order seeded by the epoch), centred windows otherwise."""
        p = self.params
        data = PatchDataset(
            self.splits[split], self.sources, crop=p.crop if train else p.window, random_crop=train
        )
        return DataLoader(
            data,
            batch_size=p.batch_size,
            shuffle=train,
            drop_last=train and len(data) > p.batch_size,
            num_workers=self.spec.workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(p.seed * 100003 + epoch),
        )

    def train_batches(self, epoch: int) -> Any:
        batches = self.loader("train", train=True, epoch=epoch)
        self.epoch_bar = tqdm(
            batches,
            desc=f"epoch {epoch + 1}/{self.params.epochs}",
            unit="batch",
            leave=False,
            disable=None,  # off when stderr is not a terminal
        )
        return self.epoch_bar

    def show_loss(self, loss: float) -> None:
        if self.epoch_bar is not None:
            self.epoch_bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def training_record(self, trainer: Trainer) -> dict[str, Any]:
        """The card's ``training`` object: data summary, hyperparameters, hardware, time, code version."""
        p, meta, spec = self.params, self.table.meta, self.spec
        schedule = (
            "the paper's schedule"
            if p.epochs >= PAPER_EPOCHS
            else f"a shorter schedule than the paper's ({p.epochs} epochs instead of {PAPER_EPOCHS})"
        )
        note = f"trained on {'GPU' if self.device.type == 'cuda' else 'CPU'} with {schedule}"
        return {
            "data": {
                "patch_table": str(spec.patches),
                "mosaics": len(set(self.table.mosaic)),
                "patients": {s: len(set(part.patient)) for s, part in self.splits.items()},
                "patches": table_counts(self.table),
                "per_class": meta.get("per_class"),
                "patch_px": meta.get("patch"),
                "split_seed": meta.get("seed"),
                "split_pixel_share": {s: v["share"] for s, v in meta.get("split", {}).items()},
            },
            "hyperparameters": p.as_dict(),
            "device": hardware(self.device),
            "note": note + (f"; {spec.note}" if spec.note else ""),
            "code_version": code_version(),
            "epochs_run": trainer.epoch,
            "epoch_time_s": round(sum(h["seconds"] for h in trainer.history), 1),
            "wall_time_s": round(time.monotonic() - self.started, 1),
        }

    def card(self, trainer: Trainer, metrics: dict[str, Any]) -> ModelCard:
        return ModelCard(
            name=self.spec.name or self.spec.out.name,
            arch=self.params.arch,
            in_chans=1,
            num_classes=1,
            window=self.params.window,
            pixel_size_um=float(self.table.meta.get("processing_pixel_size_um", 2.0)),
            mean=[trainer.mean],
            std=[trainer.std],
            positive_class="aspecific",
            threshold=0.5,
            training=self.training_record(trainer),
            metrics=metrics,
        )

    def on_epoch(self, report: EpochReport, trainer: Trainer) -> None:
        """Save the resumable state, the model folder when the epoch is the best, and the logs."""
        last = self.state_dir / "last.pt"
        torch.save(trainer.state_dict(), last.with_suffix(".tmp"))
        last.with_suffix(".tmp").replace(last)  # a file, not a folder: a rename is the whole swap
        out = self.spec.out
        if report.best:
            card = self.card(trainer, {"best_epoch": report.epoch, "val": dict(report.val)})
            save_model(out, trainer.net, card, half=self.spec.half)
        if (out / "card.json").is_file():
            write_logs(out, trainer.history)


def train(spec: TrainingSpec) -> dict[str, Any]:
    """Train (or resume) to ``params.epochs``, then score the best epoch's weights on the validation and
    test patches; returns the card's ``metrics``."""
    job = TrainingRun(spec)
    net = create_network(job.params.arch, in_chans=1, drop_rate=job.params.drop_rate)
    init_classifier(net)
    mean, std = estimate_mean_std(job.loader("train", train=False))
    trainer = Trainer(net, job.params, device=spec.device, mean=mean, std=std)
    job.state_dir.mkdir(parents=True, exist_ok=True)
    last = job.state_dir / "last.pt"
    if spec.resume and last.is_file():
        trainer.load_state_dict(torch.load(last, map_location=spec.device, weights_only=False))
        log.info("resumed from %s at epoch %d", last, trainer.epoch)

    val_batches = job.loader("val", train=False)
    fit(trainer, job.train_batches, val_batches, on_epoch=job.on_epoch, on_batch=job.show_loss)

    best = load_model(spec.out, device=spec.device)
    trainer.net.load_state_dict(best.net.state_dict())
    val = trainer.evaluate(job.loader("val", train=False))
    test = trainer.evaluate(job.loader("test", train=False))
    metrics = {"best_epoch": best.card.metrics.get("best_epoch"), "val": val, "test": test}
    save_model(spec.out, trainer.net, job.card(trainer, metrics), half=spec.half)
    write_logs(spec.out, trainer.history)
    log.info(
        "test patches: AUC %s, accuracy at 0.5 %.4f (n=%d); wrote %s in %.0f s",
        f"{test['auc']:.4f}" if test["auc"] is not None else "n/a",
        test["accuracy"] or 0.0,
        test["n"],
        spec.out,
        time.monotonic() - job.started,
    )
    return metrics
