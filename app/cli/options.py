"""Argument types shared by several sub-commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from models.errors import InvalidParameter
from worker.params import PLAIN_AVERAGING, MethodParams


def method_value(name: str) -> Callable[[str], Any]:
    """An argparse type for the method parameter ``name``: its text validated by the one parameter schema
    (``worker.params.MethodParams``), so a refusal reads as the API's does."""

    def parse(text: str) -> Any:
        try:
            return MethodParams.parse_text(name, text)
        except InvalidParameter as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    parse.__name__ = name  # argparse names the type in its own messages
    return parse


def sigma_units(text: str) -> float | None:
    """A sigma in units of the network's output stride (the evaluation's sweeps), or ``none`` for the
    paper's row without a Gaussian."""
    if text.strip().lower() == PLAIN_AVERAGING:
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"sigma must be a number (x output stride) or 'none', got {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"sigma must be > 0, got {text}")
    return value


def _whole(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _whole(text, 1)


def non_negative_int(text: str) -> int:
    return _whole(text, 0)


def add_model_option(p: argparse.ArgumentParser, *, default_text: str = "phantom-b2") -> None:
    """``--model``: a model folder or a zoo name."""
    p.add_argument("--model", default=None, help=f"model folder or zoo name (default: {default_text})")


def add_device_options(p: argparse.ArgumentParser) -> None:
    """Where and how the network runs: ``--device``, ``--precision``, ``--batch-size``."""
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="where the network runs (default auto: CUDA when present)",
    )
    p.add_argument(
        "--precision",
        type=method_value("precision"),
        metavar="{fp32,bf16,fp16}",
        default=None,
        help="network precision (default fp32 on CPU, bf16 on CUDA)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="windows per network batch (default 16 on CPU, 256 on CUDA, for 256 px windows)",
    )


def add_scorecam_options(p: argparse.ArgumentParser, *, skip_help: str = "heat error < this") -> None:
    """The ScoreCAM cost options: ``--scorecam-top-k`` and ``--scorecam-skip-below``."""
    p.add_argument(
        "--scorecam-top-k",
        type=method_value("scorecam_top_k"),
        default=None,
        help="ScoreCAM: score only the k strongest channels per window (default: all, exact)",
    )
    p.add_argument(
        "--scorecam-skip-below",
        type=method_value("scorecam_skip_below"),
        default=0.0,
        help=f"ScoreCAM: zero map for windows with p below this ({skip_help}; default 0)",
    )


def add_step_and_sigma(p: argparse.ArgumentParser) -> None:
    """``--step`` and ``--sigma``, both defaulting to the model card's."""
    p.add_argument(
        "--step",
        type=method_value("step"),
        default=None,
        help="window step in processing px, at most the model's window (default: the model card's)",
    )
    p.add_argument(
        "--sigma",
        type=method_value("sigma"),
        default=None,
        help=f"Gaussian sigma in processing px, or '{PLAIN_AVERAGING}' for plain averaging "
        "(default: the model card's)",
    )


def add_mode_option(p: argparse.ArgumentParser) -> None:
    """``--mode``: the paper's exact windows, or dense mode."""
    p.add_argument(
        "--mode",
        type=method_value("mode"),
        metavar="{exact,dense}",
        default="exact",
        help="exact: the paper's sliding windows; dense: maps from one convolutional pass (windows every "
        "32 px), window probabilities from isolated crops on a coarser grid",
    )
