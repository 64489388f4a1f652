"""The docs cannot drift from the code: generated blocks are current, every window count they quote is the
engine's, every setting's default is the one ``app/settings.py`` has, and ``docs/architecture.md`` names
every module that exists and none that does not."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.generated_docs import BLOCK, BLOCKS, DOCS, REPO, render, stale_docs

ENV_EXAMPLE = REPO / ".env.example"
SERVICE_MD = REPO / "docs" / "service.md"
ARCHITECTURE_MD = REPO / "docs" / "architecture.md"
PACKAGES = ("app", "worker", "models")
PACKAGE_PATHS = tuple(f"{p}/" for p in PACKAGES)
UNITS = {"KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "s": 1, "days": 24 * 3600}


def text_of(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def flat(text: str) -> str:
    """Text with its line breaks and runs of spaces as one space (docs wrap sentences anywhere)."""
    return re.sub(r"\s+", " ", text)


# -- generated blocks ----------------------------------------------------------------------------------------


def test_every_generated_block_is_what_the_code_writes() -> None:
    stale = [str(p.relative_to(REPO)) for p in stale_docs()]
    assert stale == [], f"run `.venv/bin/python -m tests.generated_docs` to rewrite the blocks of {stale}"


def test_every_block_is_used_and_every_marker_names_a_block() -> None:
    used = {m["name"] for p in DOCS for m in BLOCK.finditer(text_of(p))}
    assert used == set(BLOCKS)
    for path in DOCS:  # an unclosed or misspelt marker would be left alone by the generator
        text = text_of(path)
        assert text.count("<!-- generated:") == len(BLOCK.findall(text)), path


def test_a_changed_card_leaves_the_docs_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    """What this test file is for: a card whose defaults change makes the committed docs stale."""
    import tests.generated_docs as generated

    before = render(text_of(REPO / "README.md"))
    real = generated.shipped_defaults()
    monkeypatch.setattr(generated, "shipped_defaults", lambda: {**real, "step": real["step"] + 1})
    assert render(text_of(REPO / "README.md")) != before


# -- window counts -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quoted:
    """A window count a doc quotes (outside generated blocks), and the run it describes."""

    doc: str
    text: str
    windows: int
    side_px: int
    steps: tuple[int, ...]
    window: int = 256
    downsample: int = 1
    mosaics: int = 1


PHANTOM_PX = 1750
"""The side of the benchmark phantoms: 3500 um at 2 um/px (``--min-side-um 3500 --max-side-um 3500``)."""

QUOTED = (
    Quoted("README.md", "step 25: 12,321 windows", 12321, 12000, (25,), downsample=4),
    Quoted("README.md", "1000 x 1000 processing image (961 windows)", 961, 1000, (25,)),
    Quoted("README.md", "12000 x 12000 at downsample 1 (576 windows)", 576, 12000, (512,)),
    Quoted("README.md", "169 windows at step 128", 169, PHANTOM_PX, (128,)),
    Quoted("docs/engine.md", "CAM step 25 (961 windows)", 961, 1000, (25,)),
    Quoted("docs/engine.md", "ScoreCAM top-16 step 100 (81 windows)", 81, 1000, (100,)),
    Quoted("docs/engine.md", "exact, step 32 (2304 windows a mosaic)", 2304, PHANTOM_PX, (32,)),
    Quoted("docs/engine.md", "(169 windows every 128 px", 169, PHANTOM_PX, (128,)),
    Quoted("docs/engine.md", "(600 x 600 processing pixels, 64 windows", 64, 2400, (50,), downsample=4),
    Quoted("docs/phantom.md", "(6 x 4938 windows)", 4938, PHANTOM_PX, (25, 50, 100)),
    Quoted("docs/phantom.md", "(12 x 4938 windows)", 4938, PHANTOM_PX, (25, 50, 100)),
    Quoted("docs/phantom.md", "step-25 mosaic (3721 windows", 3721, PHANTOM_PX, (25,)),
    Quoted("docs/phantom.md", "89 % of 512 windows of two", 512, PHANTOM_PX, (100,), mosaics=2),
    Quoted("docs/phantom.md", "top 8 at step 100 (6 x 256 windows)", 256, PHANTOM_PX, (100,)),
    Quoted("docs/phantom.md", "top 8 at step 100 (12 x 256 windows)", 256, PHANTOM_PX, (100,)),
    # the tiny test model's 64 px windows on the real 1024 px tile at 0.5 um/px (reduced 4x)
    Quoted("docs/viewer.md", "threshold 0.3 and pixel size 0.5 µm (169 windows)", 169, 1024, (16,), 64, 4),
)


def window_count(q: Quoted) -> int:
    from worker.engine.windows import estimate_windows

    return q.mosaics * sum(
        estimate_windows(q.side_px, q.side_px, downsample=q.downsample, window=q.window, step=step)
        for step in q.steps
    )


@pytest.mark.parametrize("quoted", QUOTED, ids=lambda q: f"{q.doc}: {q.text}")
def test_each_quoted_window_count_is_the_engines(quoted: Quoted) -> None:
    assert quoted.text in flat(text_of(REPO / quoted.doc)), f"{quoted.doc} no longer says {quoted.text!r}"
    assert f"{quoted.windows:,}" in quoted.text or str(quoted.windows) in quoted.text
    assert window_count(quoted) == quoted.windows


def test_bands_of_window_rows_quoted_are_the_engines() -> None:
    from worker.engine.windows import window_starts

    text = flat(text_of(REPO / "docs" / "engine.md"))
    assert "31 window rows split 16 + 15 (496 and 465 windows)" in text
    assert len(window_starts(1000, 256, 25)) == 31 and (16 * 31, 15 * 31) == (496, 465)
    assert "9 window rows at step 100 split 4 + 5 (36 and 45 windows" in text
    assert len(window_starts(1000, 256, 100)) == 9 and (4 * 9, 5 * 9) == (36, 45)


def test_every_window_count_of_the_docs_is_checked() -> None:
    """A new ``N windows`` outside generated blocks needs an entry in ``QUOTED`` (or to be generated)."""
    checked = {(q.doc, q.text) for q in QUOTED}
    extra = {"docs/engine.md": ("(496 and 465 windows)", "(36 and 45 windows", "fewer than 4 windows")}
    unchecked = []
    for path in DOCS:
        doc = str(path.relative_to(REPO))
        text = flat(BLOCK.sub("", text_of(path)))
        for match in re.finditer(r"(?<!batch of )\b\d[\d,]* windows\b(?!/s)", text):  # not a batch size
            around = text[max(0, match.start() - 80) : match.end() + 40]
            known = [t for d, t in checked if d == doc] + list(extra.get(doc, ()))
            if not any(match.group(0) in t and t in around for t in known):
                unchecked.append(f"{doc}: ...{around}...")
    assert unchecked == []


# -- settings ------------------------------------------------------------------------------------------------


def settings_fields() -> dict[str, Any]:
    """Every service setting by its environment variable, with its default (``...`` when required)."""
    from pydantic_core import PydanticUndefined

    from app.settings import Settings

    out: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        env = "REDIS_URL" if name == "redis_url" else f"RCMSEG_{name.upper()}"
        out[env] = ... if field.default is PydanticUndefined else field.default
    return out


def same(written: str, default: Any) -> bool:
    """Whether a value as a doc writes it is the default."""
    if isinstance(default, bool):
        return written.lower() == str(default).lower()
    if isinstance(default, int | float):
        try:
            return float(written.replace(",", "")) == float(default)
        except ValueError:
            return False
    if isinstance(default, Path):
        return written in (str(default), str(default.relative_to(REPO)) if default.is_absolute() else "")
    return written == ("" if default is None else str(default))


def test_the_settings_table_of_service_md_gives_each_default() -> None:
    rows = dict(re.findall(r"^\| `((?:RCMSEG_|REDIS_)[A-Z_]+)` \| ([^|]*) \|", text_of(SERVICE_MD), re.M))
    fields = settings_fields()
    assert sorted(set(fields) - set(rows)) == [], "settings missing from the table of docs/service.md"
    assert sorted(set(rows) - set(fields)) == [], "rows of docs/service.md naming no setting"
    wrong = {}
    for env, cell in rows.items():
        default = fields[env]
        value = re.search(r"`([^`]*)`", cell)
        if default is ...:
            ok = "required" in cell
        elif default is None:
            ok = value is None
        elif default == "":
            ok = cell.strip() == "empty"
        else:
            ok = value is not None and same(value.group(1), default)
        if not ok:
            wrong[env] = (cell.strip(), default)
    assert wrong == {}


COMPOSE_SET = {"REDIS_URL", "RCMSEG_DATA_DIR", "RCMSEG_MODEL_ZOO"}
"""Set by docker-compose.yml itself: .env.example shows the values the containers get, not the defaults."""


def test_env_example_shows_each_default_and_each_size_it_names() -> None:
    lines = text_of(ENV_EXAMPLE).splitlines()
    fields = settings_fields()
    shown, wrong, comment = set(), {}, []
    for line in lines:
        match = re.match(r"^#? ?((?:RCMSEG_|REDIS_URL)[A-Z_]*)=(.*)$", line)
        if not match:
            comment = [*comment, line] if line.startswith("#") else []
            continue
        env, value = match.groups()
        if env not in fields:
            comment = []
            continue
        shown.add(env)
        default = fields[env]
        if env not in COMPOSE_SET and default is not ...:
            if not same(value, default):
                wrong[env] = (value, default)
            for number, unit in re.findall(r"\((\d+(?:\.\d+)?) (KiB|MiB|GiB|days)\)", " ".join(comment)):
                if float(number) * UNITS[unit] != float(default):
                    wrong[env] = (f"({number} {unit})", default)
        comment = []
    assert sorted(set(fields) - shown) == [], "settings missing from .env.example"
    assert wrong == {}


def test_settings_quoted_in_the_prose_have_their_defaults() -> None:
    """``RCMSEG_X`` (20), ``RCMSEG_X`` (64 KiB), ``RCMSEG_X``, 10 s: the number is the default."""
    fields = settings_fields()
    pattern = re.compile(
        r"`((?:RCMSEG_|REDIS_)[A-Z_]+)`\)?\s*[(,]\s*(\d+(?:\.\d+)?)\s*(KiB|MiB|GiB|s|days)?\b"
    )
    wrong = []
    for path in DOCS:
        for env, number, unit in pattern.findall(text_of(path)):
            default = fields.get(env)
            if env not in fields or default is ... or default is None:
                continue
            if float(number) * UNITS.get(unit, 1) != float(default):
                wrong.append(f"{path.relative_to(REPO)}: {env} {number} {unit} (default {default})")
    assert wrong == []


def test_defaults_of_the_code_quoted_in_the_prose() -> None:
    from app.cli import build_parser
    from tests.generated_docs import shipped_card
    from worker.engine.summary import FEW_WINDOWS
    from worker.io.colormap import HEATMAP_COLORMAP, TRANSPARENT_BELOW
    from worker.plan import DEFAULT_INPUT_PIXEL_SIZE_UM

    engine = flat(text_of(REPO / "docs" / "engine.md"))
    paper = shipped_card().model_copy(update={"defaults": None}).method_defaults()  # a card without defaults
    window = shipped_card().window
    assert (
        f"the paper's best CAM row: CAM, step {paper.step}, sigma 5/8 of the window, "
        f"{float(paper.model_dump()['sigma']):g} px at {window} px windows" in engine
    )
    assert f"a result from fewer than {FEW_WINDOWS} windows" in engine
    segment = build_parser().parse_args(["segment", "in.tif", "--out", "out"])
    assert f"(default {segment.max_pixels:,}, twice a 12000 x 12000 mosaic)" in engine
    assert segment.max_pixels == 2 * 12000 * 12000

    viewer = flat(text_of(REPO / "docs" / "viewer.md"))
    service = flat(text_of(SERVICE_MD))
    assumed = f"{DEFAULT_INPUT_PIXEL_SIZE_UM:g} µm"
    assert f"assumes {assumed} only where the file records none" in viewer
    assert f"heat below {TRANSPARENT_BELOW:g} is transparent" in viewer
    assert f'matplotlib\'s "{HEATMAP_COLORMAP}"' in viewer
    assert f"(0..1, default {TRANSPARENT_BELOW:g};" in service
    assert f"`{HEATMAP_COLORMAP}` (default)" in service


# -- docs/architecture.md ------------------------------------------------------------------------------------


def existing_modules() -> set[str]:
    """Every module of the three packages, as a path (package ``__init__`` and ``__main__`` files apart)."""
    return {
        str(p.relative_to(REPO))
        for package in PACKAGES
        for p in (REPO / package).rglob("*.py")
        if p.name not in ("__init__.py", "__main__.py") and "static" not in p.parts
    }


def modules_named_by_the_rooms_table() -> set[str]:
    """The modules the table "The rooms" names: each row's first path is its folder (or a module, whose
    folder counts), and every ``name.py`` of the row is read in that folder unless it starts with a
    package."""
    text = text_of(ARCHITECTURE_MD)
    table = text[text.index("## The rooms") :]
    table = table[: table.index("\n## ")]
    named: set[str] = set()
    for row in re.findall(r"^\| (.+) \|$", table, re.M):
        tokens = re.findall(r"`([^`]+)`", row)
        paths = [t for t in tokens if t.endswith((".py", "/")) and not t.startswith("rcmseg")]
        if not paths or not paths[0].startswith(PACKAGE_PATHS):
            continue
        folder = paths[0] if paths[0].endswith("/") else str(Path(paths[0]).parent) + "/"
        for token in paths:
            if token.endswith(".py"):
                named.add(token if token.startswith(PACKAGE_PATHS) else folder + token)
    return named


def test_architecture_names_every_module_and_only_modules_that_exist() -> None:
    named, existing = modules_named_by_the_rooms_table(), existing_modules()
    missing = sorted(existing - named)
    unknown = sorted(p for p in named - existing if not p.endswith(("__init__.py", "__main__.py")))
    assert missing == [], f"docs/architecture.md, 'The rooms': name these modules: {missing}"
    assert unknown == [], f"docs/architecture.md, 'The rooms': these modules do not exist: {unknown}"


def test_every_path_architecture_md_mentions_exists() -> None:
    text = text_of(ARCHITECTURE_MD)
    paths = re.findall(r"`((?:app|worker|models)/[\w/]+\.py)(?:::[\w.]+)?`", text)
    assert len(paths) > 10
    assert sorted({p for p in paths if not (REPO / p).is_file()}) == []
    names = {Path(p).name for p in existing_modules()} | {"__init__.py"}
    bare = set(re.findall(r"`(\w+\.py)`", text))
    assert sorted(bare - names) == []


def test_architecture_lists_the_torch_free_worker_modules_the_api_may_import() -> None:
    from tests.test_layers import TORCH_FREE_WORKER_MODULES

    text = flat(text_of(ARCHITECTURE_MD).replace("│", " "))
    listed = text.split("the API imports from worker only its torch-free modules:", 1)[1].split(";", 1)[0]
    names = {f"worker.{name.strip()}" for name in listed.split(",")}
    assert names == set(TORCH_FREE_WORKER_MODULES)


def test_the_cards_figures_quoted_in_the_prose() -> None:
    """The shipped card's defaults, its validation run and its test metrics, wherever prose quotes them."""
    from tests.generated_docs import shipped_card, shipped_defaults

    card, d = shipped_card(), shipped_defaults()
    chosen, test = card.metrics["defaults_validation"], card.metrics["test"]
    sigma = float(d["sigma"])
    phantom = flat(text_of(REPO / "docs" / "phantom.md"))
    assert (
        f"{'CAM' if d['cam'] == 'cam' else 'ScoreCAM'}, step {d['step']} px, Gaussian sigma {sigma:g} px "
        f"({sigma / 32:g} x the 32 px output stride), mask threshold {d['threshold']:g}" in phantom
    )
    assert f"Dice ({chosen['best_dice']:.3f}, pixel AUC {chosen['auc']:.3f};" in phantom
    assert f"on the {chosen['mosaics']} validation patients" in phantom
    readme = flat(text_of(REPO / "README.md"))
    assert (
        f"On {card.training['data']['patients']['test']} held-out phantom patients it reaches a patch AUC of "
        f"{test['auc']:.3f} and an accuracy of {test['accuracy']:.3f}" in readme
    )
    benchmark = flat(text_of(REPO / "docs" / "results" / "phantom-benchmark.md"))
    assert f"**{chosen['label']}**" in benchmark
    assert f"the card uses the validation threshold {d['threshold']:g}" in benchmark


def test_the_job_body_example_and_the_stages_are_the_contracts() -> None:
    from tests.generated_docs import PHANTOM_PIXEL_SIZE_UM, WALKTHROUGH_PHANTOM_PX, windows
    from worker.contract import STAGE_SPAN, overall_progress

    service = flat(text_of(SERVICE_MD))
    total = windows(WALKTHROUGH_PHANTOM_PX, pixel_size_um=PHANTOM_PIXEL_SIZE_UM)
    done = total // 2
    example = re.search(
        r'"progress": ([\d.]+), "stage": "(\w+)", "windows_done": (\d+), "windows_total": (\d+)', service
    )
    assert example, "docs/service.md: the job body example"
    progress, stage, shown_done, shown_total = example.groups()
    assert (int(shown_done), int(shown_total)) == (done, total)
    assert float(progress) == overall_progress(stage, done, total)
    spans = ", ".join(f"`{stage}` ({lo * 100:g}-{hi * 100:g} %)" for stage, (lo, hi) in STAGE_SPAN.items())
    assert f"`progress` runs 0..1 over the engine's stages: {spans}." in service
