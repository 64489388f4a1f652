"""Training the patch classifier (D'Alonzo et al. 2021, "Model training") on any torch datasets.

Defaults are the paper's: timm EfficientNet-B2, one input channel, one logit, dropout 0.75; SGD with momentum
0.9 and weight decay 5e-4; learning rate 1e-3 multiplied by 0.9 every 10 epochs; batch 128; binary cross
entropy with logits; 500 epochs. Loaders yield uint8 windows (B, 1, S, S) and float labels (1 = aspecific);
the trainer scales, augments and normalises them on the device. Nothing here touches files: checkpoints,
logs and curves are written by the caller from the ``on_epoch`` reports.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.errors import InvalidParameter
from models.metrics.patch import patch_metrics
from models.precision import autocast_unless_fp32
from models.training import PAPER_EPOCHS
from models.training.augment import AugmentParams, augment_batch

log = logging.getLogger(__name__)

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
OptimizerName = Literal["sgd", "adamw"]


@dataclass(frozen=True, kw_only=True)
class TrainParams:
    """Hyperparameters of one run; every field is recorded in the model card.

    ``crop`` is the random training crop and ``window`` the centred evaluation crop (the card's window);
    the paper uses 256 for both. A smaller training crop keeps the pixel size, so patterns keep their
    scale, and cuts the cost of a step by (window / crop) squared.
    """

    arch: str = "efficientnet_b2"
    drop_rate: float = 0.75
    optimizer: OptimizerName = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step_epochs: int = 10
    lr_gamma: float = 0.9
    batch_size: int = 128
    epochs: int = PAPER_EPOCHS
    crop: int = 256
    window: int = 256
    seed: int = 0
    amp: bool = True
    channels_last: bool = True
    augment: AugmentParams = field(default_factory=AugmentParams)

    def __post_init__(self) -> None:
        if self.optimizer not in ("sgd", "adamw"):
            raise InvalidParameter(f"optimizer must be 'sgd' or 'adamw', got {self.optimizer!r}")
        if not 0 <= self.drop_rate < 1:
            raise InvalidParameter(f"dropout must be in [0, 1), got {self.drop_rate}")
        if not self.lr > 0:
            raise InvalidParameter(f"learning rate must be > 0, got {self.lr}")
        if not 0 < self.lr_gamma <= 1:
            raise InvalidParameter(f"learning-rate factor must be in (0, 1], got {self.lr_gamma}")
        for name in ("lr_step_epochs", "batch_size", "epochs", "crop", "window"):
            if getattr(self, name) < 1:
                raise InvalidParameter(f"{name.replace('_', ' ')} must be >= 1, got {getattr(self, name)}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise InvalidParameter("weight decay must be >= 0 and momentum in [0, 1)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class EpochReport:
    """One epoch: training loss, validation metrics and whether these are the best weights so far."""

    epoch: int
    lr: float
    train_loss: float
    val: dict[str, float | int | None]
    seconds: float
    best: bool

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "lr": self.lr, "train_loss": self.train_loss, "seconds": self.seconds,
                "best": self.best, **{f"val_{k}": v for k, v in self.val.items()}}  # fmt: skip


def init_classifier(net: nn.Module, *, std: float = 0.01) -> None:
    """Start the single logit near zero.

    timm scales its EfficientNet head init by 1/sqrt(num_classes); with one class that is U(-1, 1) over
    ~1400 features, so fresh logits reach +-50 and the first BCE steps diverge.
    """
    head = net.get_classifier()  # type: ignore[operator]
    if not isinstance(head, nn.Linear):
        raise InvalidParameter(f"expected a linear classifier, got {type(head).__name__}")
    nn.init.normal_(head.weight, std=std)
    if head.bias is not None:
        nn.init.zeros_(head.bias)


def estimate_mean_std(batches: Batches, *, max_batches: int = 20) -> tuple[float, float]:
    """Mean and standard deviation of uint8 windows scaled to [0, 1] (the card's ``mean``/``std``)."""
    total = total_sq = count = 0.0
    for i, (x, _) in enumerate(batches):
        if i >= max_batches:
            break
        v = x.double() / 255.0
        total += float(v.sum())
        total_sq += float((v * v).sum())
        count += v.numel()
    if count == 0:
        raise InvalidParameter("no training windows to estimate the intensity mean from")
    mean = total / count
    return mean, math.sqrt(max(total_sq / count - mean * mean, 1e-8))


class Trainer:
    """Optimiser, schedule and loops around one network; ``state_dict`` makes a run resumable."""

    def __init__(
        self, net: nn.Module, params: TrainParams, *, device: torch.device, mean: float, std: float
    ) -> None:
        self.params, self.device = params, device
        self.mean, self.std = float(mean), float(std)
        self.cuda = device.type == "cuda"
        self.memory_format = torch.channels_last if params.channels_last else torch.contiguous_format
        self.net = net.to(device).to(memory_format=self.memory_format)  # type: ignore[call-overload]
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
        for name, p in self.net.named_parameters():
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        groups = [
            {"params": decay, "weight_decay": params.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if params.optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=params.lr, momentum=params.momentum
            )
        else:
            self.optimizer = torch.optim.AdamW(groups, lr=params.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=params.lr_step_epochs, gamma=params.lr_gamma
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda and params.amp)
        self.generator = torch.Generator(device="cpu").manual_seed(params.seed)
        self.epoch = 0
        self.best_auc = -math.inf
        self.history: list[dict[str, Any]] = []

    def _inputs(self, x: torch.Tensor, *, train: bool) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).float().div_(255.0)
        if train:
            x = augment_batch(x, self.params.augment, self.generator)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)

    def _autocast(self) -> AbstractContextManager[object]:
        """fp16 mixed precision on CUDA unless ``amp`` is off; float32 elsewhere."""
        return autocast_unless_fp32(
            self.device.type, torch.float16 if self.cuda and self.params.amp else None
        )

    def train_epoch(self, batches: Batches, *, on_batch: Callable[[float], None] | None = None) -> float:
        """One pass over ``batches``; returns the mean loss."""
        self.net.train()
        total, count = 0.0, 0
        for x, y in batches:
            inputs = self._inputs(x, train=True)
            target = y.to(self.device).float().view(-1, 1)
            with self._autocast():
                loss = F.binary_cross_entropy_with_logits(self.net(inputs).float(), target)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            value = float(loss.detach())
            total += value * len(y)
            count += len(y)
            if on_batch is not None:
                on_batch(value)
        self.scheduler.step()
        self.epoch += 1
        return total / max(count, 1)

    @torch.no_grad()
    def predict(self, batches: Batches) -> tuple[np.ndarray, np.ndarray, float]:
        """Aspecific probabilities, labels and mean loss over ``batches`` (no augmentation)."""
        self.net.eval()
        scores, labels, total = [], [], 0.0
        for x, y in batches:
            with self._autocast():
                logits = self.net(self._inputs(x, train=False)).float().view(-1)
            target = y.to(self.device).float().view(-1)
            total += float(F.binary_cross_entropy_with_logits(logits, target, reduction="sum"))
            scores.append(torch.sigmoid(logits).cpu().numpy())
            labels.append(y.numpy())
        s = np.concatenate(scores) if scores else np.zeros(0)
        lab = np.concatenate(labels) if labels else np.zeros(0)
        return s, lab, total / max(len(lab), 1)

    def evaluate(self, batches: Batches) -> dict[str, Any]:
        """Patch metrics (:func:`models.metrics.patch.patch_metrics`) and the mean loss over ``batches``."""
        scores, labels, loss = self.predict(batches)
        return {**patch_metrics(scores, labels).as_dict(), "loss": loss}

    def state_dict(self) -> dict[str, Any]:
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "epoch": self.epoch,
            "best_auc": self.best_auc,
            "history": self.history,
            "mean": self.mean,
            "std": self.std,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = int(state["epoch"])
        self.best_auc = float(state["best_auc"])
        self.history = list(state["history"])
        self.mean, self.std = float(state["mean"]), float(state["std"])


def fit(
    trainer: Trainer,
    train_batches: Callable[[int], Batches],
    val_batches: Batches,
    *,
    on_epoch: Callable[[EpochReport, Trainer], None] | None = None,
    on_batch: Callable[[float], None] | None = None,
) -> list[dict[str, Any]]:
    """Train from ``trainer.epoch`` up to ``params.epochs``, validating after every epoch.

    ``train_batches(epoch)`` gives that epoch's batches (a loader shuffled with a seed derived from the
    epoch, so a resumed run sees the same order). The best epoch is the one of highest validation AUC.
    """
    while trainer.epoch < trainer.params.epochs:
        start = time.monotonic()
        lr = float(trainer.optimizer.param_groups[0]["lr"])
        loss = trainer.train_epoch(train_batches(trainer.epoch), on_batch=on_batch)
        val = trainer.evaluate(val_batches)
        auc = val["auc"] if val["auc"] is not None else val["accuracy"] or 0.0
        best = auc > trainer.best_auc
        if best:
            trainer.best_auc = auc
        report = EpochReport(trainer.epoch, lr, loss, val, time.monotonic() - start, best)
        trainer.history.append(report.as_dict())
        log.info(
            "epoch %d: loss %.4f, val AUC %s, accuracy %.3f%s",
            report.epoch,
            loss,
            f"{val['auc']:.4f}" if val["auc"] is not None else "n/a",
            val["accuracy"] or 0.0,
            " (best)" if best else "",
        )
        if on_epoch is not None:
            on_epoch(report, trainer)
    return trainer.history
