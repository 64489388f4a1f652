"""File helpers every writer shares: content hashes and the atomic swap of a finished folder into place.

Imports no torch (the API hashes uploads and model weights with it too).
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

CHUNK = 1 << 20


def sha256_of(files: Iterable[Path], *, with_names: bool = False) -> str:
    """SHA-256 over the bytes of ``files`` in order (each preceded by its name with ``with_names``)."""
    digest = hashlib.sha256()
    for f in files:
        if with_names:
            digest.update(f.name.encode())
        with f.open("rb") as fh:
            while block := fh.read(CHUNK):
                digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """SHA-256 of one file's bytes."""
    return sha256_of([path])


def cached_file_sha256(path: Path) -> str:
    """``file_sha256``, computed once per file version (its size and mtime are part of the cache key)."""
    stat = path.stat()
    return _cached_sha256(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=64)
def _cached_sha256(path: str, _size: int, _mtime_ns: int) -> str:
    return file_sha256(Path(path))


def swap_into_place(tmp: Path, target: Path) -> None:
    """Rename the finished folder ``tmp`` to ``target``, replacing an existing ``target`` whole.

    Readers see the old folder or the new one, never a mix: the old one is renamed aside first and
    deleted only after the new one is in place. Both must be on one file system.
    """
    if not target.exists():
        os.replace(tmp, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


PRIVATE_UMASK = 0o077
"""What the service processes create is their user's alone: files 0600, folders 0700."""


def use_private_modes() -> None:
    """From now on, files and folders this process creates are private (``PRIVATE_UMASK``), as uploads
    are: a result holds a patient's heat map, and its summary the uploaded file's name. The API and the
    workers run as one user, so each still reads what the other wrote."""
    os.umask(PRIVATE_UMASK)


def current_umask() -> int:
    """The process's umask, read from ``/proc/self/status`` where Linux gives it: setting and restoring it
    would give a file another thread creates meanwhile the wider mode."""
    try:
        for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # no /proc: reading it means setting it, straight back
    os.umask(mask)
    return mask
