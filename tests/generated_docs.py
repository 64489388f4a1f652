"""The docs' generated blocks: every default, limit and window count they quote, from the card and the code.

A block is the text between ``<!-- generated: NAME -->`` and ``<!-- end generated: NAME -->`` in a doc.
``.venv/bin/python -m tests.generated_docs`` rewrites every block of every doc from ``BLOCKS``;
``tests/test_docs.py`` fails while a committed doc differs from what this module writes, so a changed card,
schema or command leaves no doc behind. Nothing here runs the service or imports torch.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOCS = (REPO / "README.md", *sorted((REPO / "docs").glob("*.md")))
BLOCK = re.compile(
    r"(?P<start><!-- generated: (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)"
    r"(?P<end><!-- end generated: (?P=name) -->)",
    re.DOTALL,
)

WALKTHROUGH_PHANTOM_PX = 500
"""Side of the walkthrough's phantom: ``rcmseg phantom --count 1 --seed 1 --max-side-um 1000`` at 2 um/px
(``tests/app/test_walkthrough.py`` checks the size the command makes)."""
SCREENSHOT_PHANTOM_PX = 750
"""Side of the phantom of ``docs/viewer.png``: ``phantom-s0-0001.tif`` of ``rcmseg phantom --count 8 --seed 0
--max-side-um 1500``."""
PHANTOM_PIXEL_SIZE_UM = 2.0
"""What ``rcmseg phantom`` writes by default, and records in the file."""


# -- what the blocks are made of --------------------------------------------------------------------------


@cache
def shipped_card() -> Any:
    """The shipped model's card, as the service reads it."""
    from models.card import parse_card
    from worker.io.zoo import DEFAULT_MODEL, DEFAULT_ZOO

    path = DEFAULT_ZOO / DEFAULT_MODEL / "card.json"
    return parse_card(json.loads(path.read_text(encoding="utf-8")), source=str(path))


def shipped_defaults() -> dict[str, Any]:
    """The shipped card's method defaults, by field name (``sigma`` whatever the card calls it)."""
    values = dict(shipped_card().method_defaults().model_dump())
    if "sigma" not in values and "sigma_px" in values:
        values["sigma"] = values.pop("sigma_px")
    return values


def number(value: Any) -> str:
    """A value as the viewer page and the docs write it: 100, 80, 0.24, none."""
    if value is None or value == "none":
        return "none"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:g}"


def sigma_text(value: Any) -> str:
    return "none (plain averaging)" if number(value) == "none" else f"{number(value)} px"


def method_name(cam: str) -> str:
    return "ScoreCAM" if cam == "scorecam" else "CAM"


def windows(side_px: int, *, pixel_size_um: float, step: int | None = None) -> int:
    """The windows the engine cuts from a square mosaic of ``side_px`` with the shipped model's window and
    (unless given) step, at the downsample factor the pixel sizes give (``worker/engine/windows.py``)."""
    from worker.engine.windows import estimate_windows

    card = shipped_card()
    downsample = max(1, round(card.pixel_size_um / pixel_size_um))
    return estimate_windows(
        side_px,
        side_px,
        downsample=downsample,
        window=card.window,
        step=step or shipped_defaults()["step"],
    )


# -- the blocks ----------------------------------------------------------------------------------------------


def shipped_defaults_block() -> str:
    card, d = shipped_card(), shipped_defaults()
    method = f"{method_name(d['cam'])} at step {d['step']} px, sigma {sigma_text(d['sigma'])}"
    where = f"{card.window} px windows at {number(card.pixel_size_um)} µm/px"
    return (
        f"Without options, the shipped model `{card.name}` runs {method}, threshold "
        f"{number(d['threshold'])}, on {where}: the `defaults` of its card, chosen by {d['chosen_by']}.\n"
    )


def job_parameters_block() -> str:
    """The table of ``POST /v1/jobs`` fields, from the request schema and the shipped card."""
    from app.api.schemas import JobCreate

    schema = JobCreate.model_json_schema()
    required = set(schema.get("required", []))
    defaults, name = shipped_defaults(), shipped_card().name
    rows = ["| Field | Default | Values | Meaning |", "|---|---|---|---|"]
    fields = sorted(schema["properties"].items(), key=lambda item: item[0] not in required)
    for field, prop in fields:
        key = field.removesuffix("_px")
        if field in required:
            default = "required"
        elif key in defaults and key != "chosen_by":
            default = f"the card's (`{name}`: `{number(defaults[key])}`)"
        elif prop.get("default") is not None:
            default = f"`{number(prop['default'])}`"
        else:
            default = "see meaning"
        meaning = str(prop.get("description", "")).replace("|", "\\|")
        rows.append(f"| `{field}` | {default} | {values_of(prop)} | {meaning} |")
    return "\n".join(rows) + "\n"


def values_of(prop: dict[str, Any]) -> str:
    """What a JSON-schema property accepts, in words: enums, constants, types with their bounds."""
    branches = [b for b in _flatten(prop) if b.get("type") != "null"]
    return " or ".join(_branch(b) for b in branches) or "any"


def _flatten(prop: dict[str, Any]) -> list[dict[str, Any]]:
    if "anyOf" in prop:
        return [leaf for branch in prop["anyOf"] for leaf in _flatten(branch)]
    return [prop]


def _branch(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return ", ".join(f"`{v}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{prop['const']}`"
    kind = {"integer": "integer", "number": "number", "string": "text"}.get(prop.get("type", ""), "value")
    low, low_in = _bound(prop, "minimum", "exclusiveMinimum")
    high, high_in = _bound(prop, "maximum", "exclusiveMaximum")
    if low is not None and high is not None:
        if low_in and high_in:
            return f"{kind} {number(low)}..{number(high)}"
        return f"{kind} in {'[' if low_in else '('}{number(low)}, {number(high)}{']' if high_in else ')'}"
    if low is not None:
        return f"{kind} {'≥' if low_in else '>'} {number(low)}"
    if high is not None:
        return f"{kind} {'≤' if high_in else '<'} {number(high)}"
    return kind


def _bound(prop: dict[str, Any], inclusive: str, exclusive: str) -> tuple[Any, bool]:
    if inclusive in prop:
        return prop[inclusive], True
    if exclusive in prop:
        return prop[exclusive], False
    return None, True


def commands_block() -> str:
    """Every sub-command of ``rcmseg`` with its one-line help, in the order ``rcmseg --help`` lists them."""
    import argparse

    from app.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help for choice in action._choices_actions}
    rows = ["| command | what it does |", "| --- | --- |"]
    rows += [f"| `rcmseg {name}` | {helps.get(name, '')} |" for name in action.choices]
    return "\n".join(rows) + "\n"


def viewer_defaults_block() -> str:
    """What the viewer's form shows for the shipped model, and its estimate for the screenshot's phantom."""
    card, d = shipped_card(), shipped_defaults()
    count = windows(SCREENSHOT_PHANTOM_PX, pixel_size_um=PHANTOM_PIXEL_SIZE_UM)
    size = f"{SCREENSHOT_PHANTOM_PX} × {SCREENSHOT_PHANTOM_PX} px"
    px = f"{number(PHANTOM_PIXEL_SIZE_UM)} µm/px"
    step, sigma, threshold = d["step"], number(d["sigma"]), number(d["threshold"])
    done = count // 2
    return (
        f"With the shipped model `{card.name}` the empty fields read *{step} (default)*, *{sigma} (default)* "
        f"and *{threshold} (default)*, and the line below them *An empty field takes the model's default: "
        f"{method_name(d['cam'])}, step {step} px, sigma {sigma_text(d['sigma'])}, threshold {threshold}. "
        f"Chosen by: …*. For the phantom of the screenshot above ({size} at {px}) the estimate reads "
        f"*Estimated cost: {count} windows of {card.window} px over {size} (mosaic at full resolution, at "
        f"the file's {px}). CAM: one network pass per window.*, and halfway through, its row in the job list "
        f"*Computing windows {round(100 * done / count)}% · {done} / {count} · …*.\n"
    )


def walkthrough_windows_block() -> str:
    count = windows(WALKTHROUGH_PHANTOM_PX, pixel_size_um=PHANTOM_PIXEL_SIZE_UM)
    step = shipped_defaults()["step"]
    side = WALKTHROUGH_PHANTOM_PX
    return (
        f"The phantom of step 1 ({side} x {side} px at {number(PHANTOM_PIXEL_SIZE_UM)} µm/px) makes {count} "
        f"windows at the shipped model's default step of {step} px.\n"
    )


BLOCKS: dict[str, Callable[[], str]] = {
    "shipped-defaults": shipped_defaults_block,
    "job-parameters": job_parameters_block,
    "commands": commands_block,
    "viewer-defaults": viewer_defaults_block,
    "walkthrough-windows": walkthrough_windows_block,
}
"""Each block's name and what writes it."""


# -- rewriting the docs ---------------------------------------------------------------------------------


def render(text: str) -> str:
    """``text`` with every generated block written anew (an unknown block name is an error)."""

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise KeyError(f"unknown generated block {name!r} (known: {', '.join(sorted(BLOCKS))})")
        return match["start"] + BLOCKS[name]() + match["end"]

    return BLOCK.sub(fill, text)


def stale_docs() -> list[Path]:
    """The docs whose generated blocks differ from what ``render`` writes."""
    return [p for p in DOCS if (text := p.read_text(encoding="utf-8")) != render(text)]


def main() -> int:
    for path in stale_docs():
        path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"rewrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
