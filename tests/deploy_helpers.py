"""Readers for the deployment files (Dockerfiles, compose files, .env, .dockerignore, pip constraints) and
the offline `docker-compose config` runs that tests/test_deploy.py checks."""

from __future__ import annotations

import importlib.metadata
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.conftest import REPO

DOCKER = REPO / "docker"
DOCKERFILE_API = DOCKER / "Dockerfile.api"
DOCKERFILE_WORKER = DOCKER / "Dockerfile.worker"
CONSTRAINTS = DOCKER / "constraints.txt"
REQUIREMENTS_API = DOCKER / "requirements-api.txt"
WORKER_ENTRYPOINT = DOCKER / "worker-entrypoint.sh"
COMPOSE = REPO / "docker-compose.yml"
COMPOSE_CPU = REPO / "docker-compose.cpu.yml"
COMPOSE_PINNED = DOCKER / "compose.gpu-pinned.yml"
COMPOSE_FILES = (COMPOSE, COMPOSE_CPU, COMPOSE_PINNED)
ENV_EXAMPLE = REPO / ".env.example"
DOCKERIGNORE = REPO / ".dockerignore"
DEPLOY_DOC = REPO / "README.md"  # its section "Deploy on a GPU server"

# -- Dockerfiles ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of CMD or ENTRYPOINT; the shell form is refused."""
        if not self.value.startswith("["):
            raise ValueError(f"{self.keyword} must use the exec form, got {self.value!r}")
        argv = json.loads(self.value)
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise ValueError(f"{self.keyword} is not a list of strings: {self.value!r}")
        return argv

    def commands(self) -> list[str]:
        """The shell commands of a RUN, split at ``&&``."""
        return [c.strip() for c in self.value.split("&&") if c.strip()]


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with line continuations joined; comments (also inside continuations) dropped."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, value = (pending + line).partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip()))
        pending = ""
    if pending:
        raise ValueError(f"{path}: unfinished line continuation")
    return instructions


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    """The instructions of the last build stage (the image that runs)."""
    starts = [i for i, ins in enumerate(instructions) if ins.keyword == "FROM"]
    if not starts:
        raise ValueError("no FROM instruction")
    return instructions[starts[-1] :]


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [ins for ins in instructions if ins.keyword == keyword]
    if len(found) != 1:
        raise ValueError(f"expected one {keyword}, found {len(found)}")
    return found[0]


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    """``ARG NAME=default`` values, wherever they are declared."""
    found: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ARG" and "=" in ins.value:
            name, _, default = ins.value.partition("=")
            found[name.strip()] = default.strip().strip('"')
    return found


def env_values(instructions: list[Instruction]) -> dict[str, str]:
    """``ENV KEY=value ...`` values of the given instructions, in order (later ones win)."""
    found: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for item in shlex.split(ins.value):
                key, sep, value = item.partition("=")
                if not sep:
                    raise ValueError(f"ENV must use the KEY=value form, got {ins.value!r}")
                found[key] = value
    return found


def pip_installs(instructions: list[Instruction]) -> list[str]:
    return [c for ins in instructions if ins.keyword == "RUN" for c in ins.commands() if "pip install" in c]


PIN = re.compile(r"""["']?([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[A-Za-z0-9,._-]+\])?==[A-Za-z0-9.+!_-]+)["']?""")


def explicit_pins(instructions: list[Instruction]) -> dict[str, str]:
    """``name==version`` arguments of the pip installs, by canonical name (extras dropped)."""
    pins: dict[str, str] = {}
    for command in pip_installs(instructions):
        for text in PIN.findall(command):
            req = Requirement(text)
            pins[canonicalize_name(req.name)] = str(next(iter(req.specifier)).version)
    return pins


# -- Requirements ---------------------------------------------------------------------------------------


def pyproject_requirements() -> dict[str, Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    reqs = (Requirement(r) for r in data["project"]["dependencies"])
    return {canonicalize_name(r.name): r for r in reqs}


def requirement_lines(path: Path) -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [Requirement(line) for line in lines if line]


def constraint_versions(path: Path = CONSTRAINTS) -> dict[str, str]:
    """Exact pins of a constraints file by canonical name; anything but ``==`` is an error."""
    pins: dict[str, str] = {}
    for req in requirement_lines(path):
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator != "==" or req.extras or req.marker:
            raise ValueError(f"{path.name}: {req} is not a plain name==version pin")
        name = canonicalize_name(req.name)
        if name in pins:
            raise ValueError(f"{path.name}: {name} pinned twice")
        pins[name] = specs[0].version
    return pins


def dependency_closure(requirements: Iterable[Requirement]) -> set[str]:
    """Canonical names of the installed distributions that ``requirements`` pull in, themselves included,
    following extras and environment markers as pip would on this machine."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    todo = list(requirements)
    while todo:
        req = todo.pop()
        name, extras = canonicalize_name(req.name), frozenset(req.extras)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not installed here: its own requirement's marker excluded it on this platform
        names.add(name)
        for text in dist.requires or []:
            dep = Requirement(text)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in extras or {""}):
                todo.append(dep)
    return names


def module_distributions() -> dict[str, list[str]]:
    """Top-level import name -> canonical names of the distributions that provide it."""
    return {
        module: [canonicalize_name(d) for d in dists]
        for module, dists in importlib.metadata.packages_distributions().items()
    }


# -- .env files, .dockerignore ----------------------------------------------------------------------------

ENV_LINE = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class EnvEntry:
    value: str
    commented: bool


def env_file_entries(path: Path = ENV_EXAMPLE) -> dict[str, EnvEntry]:
    """``KEY=value`` lines and commented ``# KEY=value`` lines (a documented default) of an env file."""
    entries: dict[str, EnvEntry] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = ENV_LINE.match(line.strip())
        if m:
            entries[m.group(2)] = EnvEntry(m.group(3), commented=m.group(1) is not None)
    return entries


def filled_env_example(values: Mapping[str, str]) -> str:
    """.env.example as an administrator fills it in: the given keys set, everything else untouched."""
    out = []
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        m = ENV_LINE.match(line.strip())
        if m and m.group(1) is None and m.group(2) in values:
            line = f"{m.group(2)}={values[m.group(2)]}"
        out.append(line)
    return "\n".join(out) + "\n"


def compose_variables(text: str) -> set[str]:
    """The variables a compose file interpolates (``${NAME}``, ``${NAME:-default}``, ...)."""
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last pattern matching the path or one
    of its parent folders decides, ``!`` patterns bringing it back."""
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for raw in patterns:
        negated = raw.startswith("!")
        regex = _glob_regex(raw.lstrip("!").strip().strip("/"))
        if any(regex.fullmatch(c) for c in candidates):
            excluded = not negated
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


# -- docker-compose config -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeRun:
    returncode: int
    stdout: str
    stderr: str

    def config(self) -> dict[str, Any]:
        if self.returncode != 0:
            raise AssertionError(f"docker-compose config failed ({self.returncode}):\n{self.stderr}")
        data = yaml.safe_load(self.stdout)
        if not isinstance(data, dict):
            raise AssertionError(f"docker-compose config printed no mapping:\n{self.stdout}")
        return data


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        raise FileNotFoundError(
            "docker-compose is not installed; `make system-deps` installs it (Debian package docker-compose)"
        )
    return found


def compose_configs(cases: Mapping[str, tuple[list[str], str]], workdir: Path) -> dict[str, ComposeRun]:
    """Run `docker-compose config` once per case, all at once (each takes about a second of CPU).

    A case is (compose files relative to the repository, .env text). Each runs in its own copy of the
    compose files, so the repository's own .env (if any) never takes part; extra files named in a case
    and absent from the repository are expected in ``workdir / "extra"``.
    """
    binary = docker_compose()
    procs: dict[str, subprocess.Popen[str]] = {}
    for name, (files, env_text) in cases.items():
        folder = workdir / name
        for rel in files:
            source = REPO / rel if (REPO / rel).is_file() else workdir / "extra" / rel
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, folder / rel)
        (folder / ".env").write_text(env_text, encoding="utf-8")
        args = [binary, "--project-directory", str(folder)]
        for rel in files:
            args += ["-f", str(folder / rel)]
        procs[name] = subprocess.Popen(
            [*args, "config"],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(folder)},
        )
    runs: dict[str, ComposeRun] = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        runs[name] = ComposeRun(proc.returncode, out, err)
    return runs


def yaml_snippets(path: Path, first_line_prefix: str) -> list[str]:
    """The ```yaml blocks of a Markdown file whose first line starts with ``first_line_prefix``."""
    blocks = re.findall(r"^[ \t]*```yaml\n(.*?)^[ \t]*```", path.read_text(encoding="utf-8"), re.M | re.S)
    dedented = []
    for block in blocks:
        lines = block.splitlines()
        indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
        dedented.append("\n".join(line[indent:] for line in lines) + "\n")
    return [b for b in dedented if b.startswith(first_line_prefix)]


def compose_duration_s(text: str) -> float:
    """A compose duration (``90s``, ``10m``, ``1h30m``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"not a compose duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def rcmseg_script() -> Path:
    """The ``rcmseg`` console script of the environment running the tests."""
    return Path(sys.executable).parent / "rcmseg"
