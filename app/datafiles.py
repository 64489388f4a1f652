"""File-system helpers of the data folder: partial-upload names, entry ages, removal, live processes."""

from __future__ import annotations

import os
import re
import shutil
import socket
from pathlib import Path

PARTIAL_NAME = re.compile(r"^upload-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)-.*\.part$")


def host_tag() -> str:
    """This host's name as it can stand in a file name."""
    return re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())[:64] or "host"


def alive(pid: int) -> bool:
    """Whether a process of this host with id ``pid`` still runs."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def children(folder: Path) -> list[Path]:
    """The entries of a folder; none when it is gone."""
    try:
        return list(folder.iterdir())
    except FileNotFoundError:
        return []


def subdirs(folder: Path) -> list[Path]:
    """The real sub-folders (no symbolic links)."""
    return [p for p in children(folder) if p.is_dir() and not p.is_symlink()]


def age(path: Path, now: float) -> float:
    """Seconds since ``path`` changed; infinite when it is gone."""
    try:
        return now - path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")


def remove(path: Path) -> int:
    """Delete a file or a folder tree; returns 1 (for counting)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return 1
