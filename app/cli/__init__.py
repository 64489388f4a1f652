"""The ``rcmseg`` command line.

Each module named in ``COMMANDS`` holds one sub-command or two close ones: it defines
``register(subparsers)``, which adds their parsers and sets ``func`` to the function that runs each
(``options`` and ``logs`` are shared helpers). Commands import heavy packages (torch) inside ``func`` so
``rcmseg --help`` stays fast and this package stays free of torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from models.errors import RcmSegError

COMMANDS = (
    "processes",
    "bench",
    "evaluate",
    "datasets",
    "segment",
    "dicom",
    "serve",
    "submit",
    "train",
)
"""The sub-command modules, in the order ``rcmseg --help`` lists them."""

DESCRIPTION = (
    "Segment reflectance confocal microscopy (RCM) mosaics, make phantom mosaics, train and evaluate "
    "models, and run or use the segmentation service."
)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def package_version() -> str:
    try:
        return version("rcmseg")
    except PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="rcmseg", description=DESCRIPTION, epilog="Each command has --help: rcmseg COMMAND --help."
    )
    parser.add_argument("--version", action="version", version=f"rcmseg {package_version()}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pyvips").setLevel(logging.ERROR)  # libvips reports its own progress as INFO
    try:
        result = args.func(args)
    except RcmSegError as exc:
        print(f"rcmseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rcmseg {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
