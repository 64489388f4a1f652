"""The command line's help: every option explained, a plain top-level description, what segment writes,
an unknown model answered with the known ones, and no progress bar on a pipe."""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import build_parser
from models.errors import InvalidModel
from tests.conftest import REPO, make_model_dir
from worker.contract import HEAT_HISTOGRAM, HEATMAP_TIFF, MASK_TIFF, REGIONS_GEOJSON, SUMMARY_FILE
from worker.io.zoo import resolve_model


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_option_of_every_command_has_help() -> None:
    missing = {
        name: [a.option_strings[0] if a.option_strings else a.dest for a in sub._actions if not a.help]
        for name, sub in subcommands().items()
    }
    assert {name: options for name, options in missing.items() if options} == {}


def test_the_top_level_description_is_a_plain_sentence() -> None:
    description = build_parser().description or ""
    assert "`" not in description and description.endswith(".")
    assert "reflectance confocal microscopy" in description


def test_segment_help_lists_what_it_writes() -> None:
    epilog = subcommands()["segment"].epilog or ""
    for name in (
        HEATMAP_TIFF,
        MASK_TIFF,
        REGIONS_GEOJSON,
        SUMMARY_FILE,
        HEAT_HISTOGRAM,
        "heat.dzi",
        "mosaic.dzi",
    ):
        assert name in epilog


def test_an_unknown_model_lists_the_known_ones(tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    make_model_dir(zoo / "small")
    (zoo / "empty").mkdir()  # not a model: not listed
    with pytest.raises(
        InvalidModel, match=r"nope: no such model folder or zoo model \(the zoo .* has: small\)"
    ):
        resolve_model("nope", zoo)
    with pytest.raises(InvalidModel, match="has: none"):
        resolve_model("nope", tmp_path / "no-zoo")


def test_no_progress_bar_when_stderr_is_a_pipe(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "phantom",
            "--out",
            str(tmp_path),
            "--count",
            "2",
            "--max-side-um",
            "500",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "%|" not in done.stderr and "it/s" not in done.stderr and "mosaic/s" not in done.stderr
    assert "2 mosaics in" in done.stderr


def test_every_progress_bar_of_the_command_line_turns_off_on_a_pipe() -> None:
    """Each ``tqdm(...)`` that a command runs says ``disable=`` (``None`` turns it off when stderr is not a
    terminal): the command-line modules and the worker code they drive."""
    files = [*(REPO / "app" / "cli").glob("*.py"), *(REPO / "worker").rglob("*.py")]
    calls = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "tqdm":
                calls.append((path.relative_to(REPO), node.lineno, {k.arg for k in node.keywords}))
    assert len(calls) >= 6
    assert [(str(p), line) for p, line, keywords in calls if "disable" not in keywords] == []


REST_MARKUP = re.compile(r"``|`[^`\s][^`]*`_?|:(?:mod|func|class|meth|attr|data|obj|ref|doc):")
"""reST a docstring may hold and a terminal would show raw: literals, roles, interpreted text."""


def test_every_help_is_plain_text() -> None:
    pages = {"rcmseg": build_parser().format_help()}
    pages.update({f"rcmseg {name}": sub.format_help() for name, sub in subcommands().items()})
    assert len(pages) > 10
    marked = {name: REST_MARKUP.findall(text) for name, text in pages.items()}
    assert {name: found for name, found in marked.items() if found} == {}
