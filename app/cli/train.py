"""``rcmseg train``: train the aspecific-vs-benign patch classifier on a weak-label patch table.

Writes MODEL_DIR in the checkpoint format the engine loads (``model.safetensors`` + ``card.json``) with the
best validation epoch's weights, plus ``metrics.jsonl`` and ``learning_curve.png``; the resumable state
(optimiser, schedule, random streams) goes to ``--state-dir``. The run itself is
:func:`worker.training.run.train`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from models.training import PAPER_EPOCHS

if TYPE_CHECKING:
    from models.training.loop import TrainParams


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


def train_params(args: argparse.Namespace) -> TrainParams:
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


def run(args: argparse.Namespace) -> int:
    logging.getLogger("pyvips").setLevel(logging.WARNING)
    from worker.engine.device import prepare_process, resolve_device
    from worker.training.run import TrainingSpec, train

    params = train_params(args)
    device = resolve_device(args.device)
    prepare_process(device, threads=args.threads)
    spec = TrainingSpec(
        patches=args.patches,
        out=args.out,
        params=params,
        device=device,
        name=args.name,
        workers=args.workers,
        half=args.half,
        cache=args.cache,
        state_dir=args.state_dir,
        resume=args.resume,
        note=args.note,
    )
    train(spec)
    return 0
