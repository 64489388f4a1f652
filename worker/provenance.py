"""What produced a result: the package version, the code revision and the machine. Imports no torch."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def package_version() -> str:
    """The installed rcmseg version (``0+unknown`` when run from a tree that was never installed)."""
    try:
        return version("rcmseg")
    except PackageNotFoundError:
        return "0+unknown"


def _git(*cmd: str) -> str:
    try:
        done = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def code_version() -> str:
    """Package version plus the git commit, marked when the working tree differs from it."""
    text = f"rcmseg {package_version()}"
    commit = _git("rev-parse", "--short", "HEAD")
    if not commit:
        return text
    dirty = bool(_git("status", "--porcelain", "--", "app", "worker", "models"))
    return f"{text} ({commit}{', uncommitted changes' if dirty else ''})"


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, or what ``platform`` knows elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
