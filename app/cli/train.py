"""``rcmseg train``: train the aspecific-vs-benign patch classifier on a weak-label patch table.

Writes MODEL_DIR in the checkpoint format the engine loads (``model.safetensors`` + ``card.json``) with the
best validation epoch's weights, plus ``metrics.jsonl`` and ``learning_curve.png``; the resumable state
(optimiser, schedule, random streams) goes to ``--state-dir``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from models.errors import InvalidParameter

log = logging.getLogger(__name__)

PAPER_EPOCHS = 500
METRICS_LOG = "metrics.jsonl"
CURVE_PNG = "learning_curve.png"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the patch classifier (defaults: the paper's recipe)",
        description="Train timm EfficientNet-B2 (1 channel, 1 logit) on weakly labelled patches. Defaults "
        "are the paper's; each can be overridden.",
    )
    p.add_argument("--patches", type=Path, required=True, help="patch table written by rcmseg weak-labels")
    p.add_argument("--out", type=Path, required=True, help="model folder to write")
    p.add_argument("--name", default=None, help="model name in card.json (default: the folder name)")
    p.add_argument("--arch", default="efficientnet_b2", help="timm architecture (default efficientnet_b2)")
    p.add_argument("--dropout", type=float, default=0.75, help="dropout before the classifier (default 0.75)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="default sgd")
    p.add_argument("--lr", type=float, default=1e-3, help="initial learning rate (default 1e-3)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="default 5e-4")
    p.add_argument("--lr-step-epochs", type=int, default=10, help="epochs between learning-rate steps (10)")
    p.add_argument("--lr-gamma", type=float, default=0.9, help="learning-rate factor at each step (0.9)")
    p.add_argument("--batch-size", type=int, default=128, help="default 128")
    p.add_argument("--epochs", type=int, default=PAPER_EPOCHS, help=f"default {PAPER_EPOCHS}")
    p.add_argument("--crop", type=int, default=256, help="random training crop from the patch (256)")
    p.add_argument(
        "--window",
        type=int,
        default=None,
        help="centred evaluation crop and the card's window (default: --crop)",
    )
    p.add_argument("--seed", type=int, default=0, help="default 0")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="default auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default 2)")
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--no-channels-last", action="store_true", help="keep the default memory format")
    p.add_argument("--half", action="store_true", help="store weights as fp16 (half the size)")
    p.add_argument("--cache", type=Path, default=None, help="mosaic cache (default: beside the table)")
    p.add_argument("--state-dir", type=Path, default=None, help="resumable state (default: OUT.state)")
    p.add_argument("--resume", action="store_true", help="continue from the last state in --state-dir")
    p.add_argument("--note", default=None, help="free text added to the card's training note")
    p.set_defaults(func=run)


def _git(*cmd: str) -> str:
    try:
        done = subprocess.run(
            ["git", *cmd],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def code_version() -> str:
    """Package version plus the git commit, marked when the working tree differs from it."""
    from app.cli import package_version

    version = f"rcmseg {package_version()}"
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return version
    dirty = bool(_git("status", "--porcelain", "--", "app", "worker", "models"))
    return f"{version} ({commit}{', uncommitted changes' if dirty else ''})"


def hardware(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {cpu}, {torch.get_num_threads()} torch threads"


def write_curve(path: Path, history: list[dict[str, Any]]) -> None:
    """Training/validation loss and validation AUC/accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    ax1.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("BCE loss")
    ax1.legend()
    ax2.plot(epochs, [h["val_auc"] for h in history], "o-", label="validation AUC")
    ax2.plot(epochs, [h["val_accuracy"] for h in history], "o-", label="validation accuracy at 0.5")
    ax2.set_xlabel("epoch")
    scores = [v for h in history for v in (h["val_auc"], h["val_accuracy"]) if v is not None]
    ax2.set_ylim(min([0.4, *scores]) - 0.05, 1.0)
    ax2.legend(loc="lower right")
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def write_logs(out: Path, history: list[dict[str, Any]]) -> None:
    (out / METRICS_LOG).write_text("".join(json.dumps(h) + "\n" for h in history), encoding="utf-8")
    write_curve(out / CURVE_PNG, history)


def train_params(args: argparse.Namespace) -> Any:
    """The ``TrainParams`` the options describe (validated there)."""
    from models.training.augment import AugmentParams
    from models.training.loop import TrainParams

    return TrainParams(
        arch=args.arch,
        drop_rate=args.dropout,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        lr_step_epochs=args.lr_step_epochs,
        lr_gamma=args.lr_gamma,
        batch_size=args.batch_size,
        epochs=args.epochs,
        crop=args.crop,
        window=args.window or args.crop,
        seed=args.seed,
        amp=not args.no_amp,
        channels_last=not args.no_channels_last,
        augment=AugmentParams(),
    )


def pick_device(choice: str) -> Any:
    import torch

    if choice == "cuda" and not torch.cuda.is_available():
        raise InvalidParameter("--device cuda: no CUDA device is available")
    return torch.device("cuda" if choice != "cpu" and torch.cuda.is_available() else "cpu")


class TrainingRun:
    """One ``rcmseg train`` invocation: data, loaders, the card, and what is written after each epoch."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch
        from tqdm import tqdm

        from worker.datasets.patches import cache_mosaics, read_table

        if args.workers < 0:
            raise InvalidParameter(f"--workers must be >= 0, got {args.workers}")
        self.args, self.started = args, time.monotonic()
        self.params = train_params(args)
        self.device = pick_device(args.device)
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        torch.manual_seed(self.params.seed)
        self.table = read_table(args.patches)
        self.splits = {s: self.table.select(s) for s in ("train", "val", "test")}
        for name, part in self.splits.items():
            if len(part) == 0:
                raise InvalidParameter(f"{args.patches}: the {name} split has no patches")
        cache = args.cache or args.patches.with_name(f"{args.patches.stem}_cache")
        with tqdm(total=len(set(self.table.mosaic)), unit="mosaic", desc="cache") as bar:
            self.sources = cache_mosaics(self.table, cache, on_mosaic=lambda _n: bar.update())
        self.state_dir: Path = args.state_dir or args.out.with_name(f"{args.out.name}.state")
        self.epoch_bar: Any = None

    def loader(self, split: str, *, train: bool, epoch: int = 0) -> Any:
        """Shuffled random crops for training (order seeded by the epoch), centred windows otherwise."""
        import torch
        from torch.utils.data import DataLoader

        from worker.datasets.patches import PatchDataset

        p = self.params
        data = PatchDataset(
            self.splits[split], self.sources, crop=p.crop if train else p.window, random_crop=train
        )
        return DataLoader(
            data,
            batch_size=p.batch_size,
            shuffle=train,
            drop_last=train and len(data) > p.batch_size,
            num_workers=self.args.workers,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(p.seed * 100003 + epoch),
        )

    def train_batches(self, epoch: int) -> Any:
        from tqdm import tqdm

        batches = self.loader("train", train=True, epoch=epoch)
        self.epoch_bar = tqdm(
            batches, desc=f"epoch {epoch + 1}/{self.params.epochs}", unit="batch", leave=False
        )
        return self.epoch_bar

    def show_loss(self, loss: float) -> None:
        if self.epoch_bar is not None:
            self.epoch_bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def training_record(self, trainer: Any) -> dict[str, Any]:
        """The card's ``training`` object: data summary, hyperparameters, hardware, time, code version."""
        from worker.datasets.patches import table_counts

        p, meta = self.params, self.table.meta
        schedule = (
            "the paper's schedule"
            if p.epochs >= PAPER_EPOCHS
            else f"a shorter schedule than the paper's ({p.epochs} epochs instead of {PAPER_EPOCHS})"
        )
        note = f"trained on {'GPU' if self.device.type == 'cuda' else 'CPU'} with {schedule}"
        return {
            "data": {
                "patch_table": str(self.args.patches),
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
            "note": note + (f"; {self.args.note}" if self.args.note else ""),
            "code_version": code_version(),
            "epochs_run": trainer.epoch,
            "epoch_time_s": round(sum(h["seconds"] for h in trainer.history), 1),
            "wall_time_s": round(time.monotonic() - self.started, 1),
        }

    def card(self, trainer: Any, metrics: dict[str, Any]) -> Any:
        from models.card import ModelCard

        return ModelCard(
            name=self.args.name or self.args.out.name,
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

    def on_epoch(self, report: Any, trainer: Any) -> None:
        """Save the resumable state, the model folder when the epoch is the best, and the logs."""
        import torch

        from worker.io.checkpoint import save_model

        last = self.state_dir / "last.pt"
        torch.save(trainer.state_dict(), last.with_suffix(".tmp"))
        os.replace(last.with_suffix(".tmp"), last)
        out = self.args.out
        if report.best:
            card = self.card(trainer, {"best_epoch": report.epoch, "val": dict(report.val)})
            save_model(out, trainer.net, card, half=self.args.half)
        if (out / "card.json").is_file():
            write_logs(out, trainer.history)


def run(args: argparse.Namespace) -> int:
    logging.getLogger("pyvips").setLevel(logging.WARNING)
    import torch

    from models.network import create_network
    from models.training.loop import Trainer, estimate_mean_std, fit, init_classifier
    from worker.io.checkpoint import load_model, save_model

    job = TrainingRun(args)
    net = create_network(job.params.arch, in_chans=1, drop_rate=job.params.drop_rate)
    init_classifier(net)
    mean, std = estimate_mean_std(job.loader("train", train=False))
    trainer = Trainer(net, job.params, device=job.device, mean=mean, std=std)
    job.state_dir.mkdir(parents=True, exist_ok=True)
    last = job.state_dir / "last.pt"
    if args.resume and last.is_file():
        trainer.load_state_dict(torch.load(last, map_location=job.device, weights_only=False))
        log.info("resumed from %s at epoch %d", last, trainer.epoch)

    fit(
        trainer,
        job.train_batches,
        job.loader("val", train=False),
        on_epoch=job.on_epoch,
        on_batch=job.show_loss,
    )

    best = load_model(args.out, device=job.device)
    trainer.net.load_state_dict(best.net.state_dict())
    val = trainer.evaluate(job.loader("val", train=False))
    test = trainer.evaluate(job.loader("test", train=False))
    metrics = {"best_epoch": best.card.metrics.get("best_epoch"), "val": val, "test": test}
    save_model(args.out, trainer.net, job.card(trainer, metrics), half=args.half)
    write_logs(args.out, trainer.history)
    log.info(
        "test patches: AUC %s, accuracy at 0.5 %.4f (n=%d); wrote %s in %.0f s",
        f"{test['auc']:.4f}" if test["auc"] is not None else "n/a",
        test["accuracy"] or 0.0,
        test["n"],
        args.out,
        time.monotonic() - job.started,
    )
    return 0
