"""``rcmseg worker``: a GPU (or CPU) worker that loads its models once and takes queued jobs."""

from __future__ import annotations

import argparse
import logging

from app.cli.logs import use_logs

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
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
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from app.settings import get_worker_settings
    from app.storage import Storage
    from worker.engine.params import RunOptions
    from worker.queue.runner import WorkerConfig, run_worker

    settings = get_worker_settings()
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
