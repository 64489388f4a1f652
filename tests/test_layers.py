"""The import layers of the house, read from the source: ``models`` below ``worker`` below ``app``, an app
that imports no torch itself (the command line reaches it only through ``worker``), and an API that loads
none.

Every ``import`` and ``from ... import`` of every module counts, wherever it stands (module level, inside a
function, under ``if TYPE_CHECKING``), so a lazy import cannot hide a crossed layer. A failure names the
file, the line and the rule.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("models", "worker", "app")
TORCH = frozenset({"torch", "timm", "torchvision"})

API_MODULES = ("app.api", "app.settings", "app.storage", "app.auth")
"""The modules (and packages) the API process loads: its image installs no torch."""

TORCH_FREE_WORKER_MODULES = frozenset(
    {
        "worker.contract",  # the job's function path, keyword arguments, meta keys and result names
        "worker.errors",  # the domain errors the API turns into HTTP errors
        "worker.io.mosaic",  # probing an upload before a job is queued
        "worker.io.zoo",  # listing and reading model cards
        "worker.io.files",  # checksums and file moves of uploads and results
        "worker.io.colormap",  # the colour tables of heatmap tiles (stored, no matplotlib)
        "worker.io.tiles",  # heat tiles coloured on request, Deep Zoom geometry
        "worker.io.regions",  # regions GeoJSON at a threshold asked for after the job
        "worker.params",  # the segmentation parameters a job request is validated against
        "worker.plan",  # the plan a job request is checked against before it is queued
        "worker.progress",  # the progress report type the contract names
        "worker.provenance",  # the package version the API reports
    }
)
"""The only ``worker`` modules the API may import. Each reads files or defines plain data and imports no
torch (checked below, through everything it imports in turn), so the API image can stay without torch and
start in a second; anything else of ``worker`` belongs behind the queue."""

ROUTE_MODULES = (
    "app.api.routes.jobs",
    "app.api.routes.mosaics",
    "app.api.routes.results",
    "app.api.services.job_queue",
)


@dataclass(frozen=True)
class Imported:
    """One imported module name, where it was written."""

    module: str
    line: int


@dataclass(frozen=True)
class Source:
    """A module of the repository: its dotted name, whether it is a package, and its file."""

    name: str
    path: Path

    @property
    def is_package(self) -> bool:
        return self.path.name == "__init__.py"

    @property
    def where(self) -> str:
        return self.path.relative_to(REPO).as_posix() if self.path.is_relative_to(REPO) else str(self.path)


def repository_sources() -> dict[str, Source]:
    """Every module under the three packages, by dotted name."""
    sources: dict[str, Source] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            sources[name] = Source(name, path)
    return sources


SOURCES = repository_sources()


def _base(node: ast.ImportFrom, source: Source) -> str:
    """The absolute module a ``from`` import names, relative imports resolved against ``source``."""
    if not node.level:
        return node.module or ""
    package = source.name.split(".") if source.is_package else source.name.split(".")[:-1]
    anchor = package[: len(package) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def imports_in(text: str, source: Source, known: dict[str, Source] = SOURCES) -> Iterator[Imported]:
    """The modules ``text`` imports. ``from pkg import name`` counts as ``pkg.name`` when that is a module of
    the repository (``from worker.io import mosaic``), and as ``pkg`` otherwise."""
    seen: set[Imported] = set()  # ``from m import a, b`` is one import of m
    for node in ast.walk(ast.parse(text, filename=str(source.path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _base(node, source)
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for name in names:
            imported = Imported(name, node.lineno)
            if imported not in seen:
                seen.add(imported)
                yield imported


def in_package(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def is_api(name: str) -> bool:
    return any(in_package(name, m) for m in API_MODULES)


def rule_broken(importer: str, target: str) -> str | None:
    """Why ``importer`` may not import ``target``, or None when it may."""
    top = target.split(".")[0]
    if in_package(importer, "models") and top in ("worker", "app"):
        return f"models must not import {top}"
    if in_package(importer, "worker") and top == "app":
        return "worker must not import app"
    if in_package(importer, "app") and top in TORCH:
        return f"app must not import {top}: the command line reaches it only through worker"
    if is_api(importer) and top == "worker" and target not in TORCH_FREE_WORKER_MODULES:
        return "the API may import from worker only TORCH_FREE_WORKER_MODULES"
    return None


def violations(text: str, source: Source) -> list[str]:
    """``file:line imports target: rule`` for every import of ``text`` that breaks a layer rule."""
    found = []
    for imported in imports_in(text, source):
        reason = rule_broken(source.name, imported.module)
        if reason is not None:
            found.append(f"{source.where}:{imported.line} imports {imported.module}: {reason}")
    return found


def layer_violations(package: str) -> list[str]:
    return [
        v
        for name, source in SOURCES.items()
        if in_package(name, package)
        for v in violations(source.path.read_text(encoding="utf-8"), source)
    ]


def torch_chain(start: str, known: dict[str, Source] = SOURCES) -> list[str] | None:
    """The import chain from ``start`` to torch, timm or torchvision through repository modules (package
    ``__init__`` files included, since importing a module runs them), or None when there is none."""
    parents: dict[str, str | None] = {start: None}
    queue = [start]
    while queue:
        name = queue.pop(0)
        source = known[name]
        for imported in imports_in(source.path.read_text(encoding="utf-8"), source, known):
            step = f"{source.where}:{imported.line} {imported.module}"
            if imported.module.split(".")[0] in TORCH:
                return _chain(parents, name, step)
            parts = imported.module.split(".")
            for i in range(1, len(parts) + 1):
                module = ".".join(parts[:i])
                if module in known and module not in parents:
                    parents[module] = f"{name}|{step}"
                    queue.append(module)
    return None


def _chain(parents: dict[str, str | None], name: str, last: str) -> list[str]:
    """The steps that led to ``name`` (each parent link is ``importer|file:line module``), then ``last``."""
    steps = [last]
    link = parents[name]
    while link is not None:
        name, step = link.split("|", 1)
        steps.insert(0, step)
        link = parents[name]
    return steps


def test_models_imports_neither_worker_nor_app() -> None:
    assert layer_violations("models") == []


def test_worker_never_imports_app() -> None:
    assert layer_violations("worker") == []


def test_app_never_imports_torch_itself_not_even_for_typing() -> None:
    assert [v for v in layer_violations("app") if "must not import" in v] == []


def test_the_api_imports_no_torch_and_only_the_torch_free_worker_modules() -> None:
    found = [v for package in API_MODULES for v in layer_violations(package)]
    assert found == []


def test_the_torch_free_worker_modules_exist_and_reach_no_torch_through_their_imports() -> None:
    missing = sorted(TORCH_FREE_WORKER_MODULES - set(SOURCES))
    assert missing == [], f"TORCH_FREE_WORKER_MODULES names modules that do not exist: {missing}"
    chains = {m: torch_chain(m) for m in sorted(TORCH_FREE_WORKER_MODULES)}
    assert {m: c for m, c in chains.items() if c is not None} == {}


def test_the_api_modules_reach_no_torch_through_their_imports() -> None:
    chains = {m: torch_chain(m) for m in SOURCES if is_api(m)}
    assert {m: c for m, c in chains.items() if c is not None} == {}


def test_importing_the_api_routes_and_job_queue_loads_no_torch() -> None:
    code = (
        f"import sys; import {', '.join(ROUTE_MODULES)}; "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'timm', 'torchvision')); "
        "assert not heavy, heavy[:5]"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_the_checker_flags_each_kind_of_crossed_layer(tmp_path: Path) -> None:
    def check(name: str, text: str, *, package: bool = False) -> list[str]:
        path = tmp_path / (f"{name.replace('.', '/')}/__init__.py" if package else f"{name}.py")
        return violations(text, Source(name, path))

    assert check("app.api.routes.fake", "import torch\n") == [
        f"{tmp_path}/app.api.routes.fake.py:1 imports torch: app must not import torch: the command line "
        "reaches it only through worker"
    ]
    inside = "def f():\n    from timm.layers import SqueezeExcite\n"
    assert [v.split(" ", 1)[1] for v in check("app.settings", inside)] == [
        "imports timm.layers: app must not import timm: the command line reaches it only through worker"
    ]
    lazy = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from worker.engine import pipeline\n"
    assert [v.split(" ", 1)[1] for v in check("app.api.fake", lazy)] == [
        "imports worker.engine.pipeline: the API may import from worker only TORCH_FREE_WORKER_MODULES"
    ]
    assert [v.split(" ", 1)[1] for v in check("models.cam.fake", "from ...app import settings\n")] == [
        "imports app.settings: models must not import app"
    ]
    assert [v.split(" ", 1)[1] for v in check("models.fake", "import worker.io.mosaic\n")] == [
        "imports worker.io.mosaic: models must not import worker"
    ]
    assert [v.split(" ", 1)[1] for v in check("worker.queue", "from app import cli\n", package=True)] == [
        "imports app.cli: worker must not import app"
    ]
    allowed = "from worker.io.mosaic import verify_readable\nfrom worker.io import zoo\nimport numpy\n"
    assert check("app.api.routes.fake", allowed) == []
    assert check("app.cli.fake", "def f():\n    from worker.engine import pipeline\n") == []  # the CLI may
    typing_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n"
    assert [v.split(" ", 1)[1] for v in check("app.cli.fake", typing_only)] == [
        "imports torch: app must not import torch: the command line reaches it only through worker"
    ]


def test_the_chain_search_names_the_indirect_torch_import(tmp_path: Path) -> None:
    files = {
        "app.api.fake": "from worker.io import fake_io\n",
        "worker.io.fake_io": "import numpy\n\n\ndef load():\n    from models.fake_net import net\n",
        "models.fake_net": "import torch.nn\n",
    }
    known = {}
    for name, text in files.items():
        path = tmp_path / f"{name}.py"
        path.write_text(text, encoding="utf-8")
        known[name] = Source(name, path)
    assert torch_chain("app.api.fake", known) == [
        f"{tmp_path}/app.api.fake.py:1 worker.io.fake_io",
        f"{tmp_path}/worker.io.fake_io.py:5 models.fake_net",
        f"{tmp_path}/models.fake_net.py:1 torch.nn",
    ]
    (tmp_path / "models.fake_net.py").write_text("import numpy\n", encoding="utf-8")
    assert torch_chain("app.api.fake", known) is None
