"""Argument types shared by several sub-commands."""

from __future__ import annotations

import argparse

from worker.params import PLAIN_AVERAGING


def _sigma(text: str, unit: str) -> float | None:
    if text.lower() == PLAIN_AVERAGING:
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sigma must be {unit} or 'none', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"sigma must be > 0, got {text}")
    return value


def sigma_type(text: str) -> float | str:
    """A Gaussian sigma in processing pixels, or ``"none"`` for plain averaging (said explicitly, so that
    an option left out can mean the model card's default)."""
    value = _sigma(text, "a number of pixels")
    return PLAIN_AVERAGING if value is None else value


def sigma_units(text: str) -> float | None:
    """A sigma in units of the network's output stride, or ``none`` for plain averaging."""
    return _sigma(text, "a number (x output stride)")


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
        choices=["fp32", "bf16", "fp16"],
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
        type=positive_int,
        default=None,
        help="ScoreCAM: score only the k strongest channels per window (default: all, exact)",
    )
    p.add_argument(
        "--scorecam-skip-below",
        type=float,
        default=0.0,
        help=f"ScoreCAM: zero map for windows with p below this ({skip_help}; default 0)",
    )


def add_step_and_sigma(p: argparse.ArgumentParser) -> None:
    """``--step`` and ``--sigma``, both defaulting to the model card's."""
    p.add_argument(
        "--step",
        type=positive_int,
        default=None,
        help="window step in processing px (default: the model card's)",
    )
    p.add_argument(
        "--sigma",
        type=sigma_type,
        default=None,
        help="Gaussian sigma in processing px, or 'none' for plain averaging (default: the model card's)",
    )
