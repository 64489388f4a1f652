"""What every benchmark shares: its parser and usual options, the process set-up, and how the result is
written (printed, and saved where ``--json`` says; a folder gets the machine-named file).
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import Any

import torch

from worker.bench import machine_info, machine_slug, print_result
from worker.engine.device import prepare_process

REPO = Path(__file__).resolve().parent.parent


def parser(doc: str | None) -> argparse.ArgumentParser:
    """A parser described by the first line of the benchmark's docstring."""
    return argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)


def add_split_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, and the mosaics of one split: ``--mosaics --split --patches --max-mosaics``."""
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--mosaics", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--patches", type=Path, default=None)
    parser.add_argument("--max-mosaics", type=int, default=2)


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=None)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="also write the result here (in a folder: <benchmark>-<machine>-<date>.json)",
    )


def prepare(device: torch.device | str = "cpu", *, threads: int | None = None) -> torch.device:
    """Set the process up as the command line's entry points do (threads, CPU allocator, cuDNN)."""
    device = torch.device(device)
    prepare_process(device, threads=threads)
    return device


def result_name(benchmark: str, device: str = "cpu") -> str:
    """``<benchmark>-<machine>-<date>.json``, the names kept in ``benchmarks/results/``."""
    return f"{benchmark}-{machine_slug(machine_info(), device)}-{date.today().isoformat()}.json"


def write_result(
    result: dict[str, Any], path: Path | None, *, benchmark: str, device: str = "cpu"
) -> Path | None:
    """Print the result as JSON and write the same text to ``path`` (a file, or a folder to name it in)."""
    if path is not None and path.is_dir():
        path = path / result_name(benchmark, device)
    print_result(result, path)
    return path
