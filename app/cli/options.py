"""Argument types shared by several sub-commands."""

from __future__ import annotations

import argparse


def _sigma(text: str, unit: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sigma must be {unit} or 'none', got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"sigma must be > 0, got {text}")
    return value


def sigma_type(text: str) -> float | None:
    """A Gaussian sigma in processing pixels, or ``none`` for plain averaging."""
    return _sigma(text, "a number of pixels")


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
