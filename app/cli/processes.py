"""``rcmseg api`` and ``rcmseg worker``: the two processes of a production service, each started on its own
(against a shared Redis), where ``rcmseg serve`` starts both on one machine."""

from __future__ import annotations

import argparse
import logging

from app.service_logs import log_config, use_logs
from worker.io.files import use_private_modes

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    register_api(sub)
    register_worker(sub)


def register_api(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "api",
        help="run the HTTP API (needs REDIS_URL and RCMSEG_API_TOKENS; see docs/service.md)",
        description="Run the HTTP API. Settings come from the environment (docs/service.md).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="HTTP worker processes (default 1)")
    parser.add_argument("--root-path", default="", help="path prefix when served behind a proxy")
    parser.set_defaults(func=run_api)


def run_api(args: argparse.Namespace) -> int:
    import uvicorn

    from app.settings import get_settings

    settings = get_settings()  # refuses to start (exit 2, one line) when a required setting is missing
    use_private_modes()
    level = "DEBUG" if args.verbose else "INFO"
    use_logs(level, settings.log_format, access_log=settings.access_log)
    log.info(
        "starting API",
        extra={"host": args.host, "port": args.port, "data_dir": str(settings.data_dir.resolve())},
    )
    uvicorn.run(
        "app.api:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        root_path=args.root_path,
        log_config=log_config(level, settings.log_format, access_log=settings.access_log),
        timeout_graceful_shutdown=10,
    )
    return 0


def register_worker(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "worker",
        help="take segmentation jobs from the queue (needs REDIS_URL; see docs/service.md)",
        description="Load the zoo's models once, then run queued jobs in this process (no fork, so CUDA "
        "stays usable). SIGTERM or Ctrl-C finish the current job first; a second one stops at once.",
    )
    parser.add_argument(
        "--models", default="", help="comma-separated zoo models to load at start (default: every zoo model)"
    )
    parser.add_argument("--name", default=None, help="worker name shown in Redis (default host.pid.random)")
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default=None, help="overrides RCMSEG_DEVICE"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the network (torch)")
    parser.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    parser.set_defaults(func=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    from app.settings import get_worker_settings
    from app.storage import Storage
    from worker.engine.device import RunOptions
    from worker.queue.worker_process import WorkerConfig, run_worker

    settings = get_worker_settings()
    use_private_modes()
    use_logs("DEBUG" if args.verbose else "INFO", settings.log_format)
    storage = Storage(settings.data_dir)
    storage.ensure()
    device = args.device or settings.device
    config = WorkerConfig(
        redis_url=settings.redis_url.get_secret_value(),
        queue=settings.queue,
        data_dir=storage.root,
        zoo=settings.model_zoo,
        models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
        device=device,
        options=RunOptions(
            device=device,
            batch_size=settings.batch_size,
            memory_budget_bytes=settings.memory_budget_bytes,
            max_pixels=settings.max_pixels,
            workdir=str(storage.scratch),
        ),
        heartbeat_s=settings.job_heartbeat_s,
        name=args.name,
        threads=args.threads,
        compile=settings.compile,
    )
    run_worker(config, burst=args.burst)
    return 0
