"""``rcmseg api``: the HTTP API alone, against a shared Redis (production; workers run separately)."""

from __future__ import annotations

import argparse
import logging

from app.cli.logs import log_config, use_logs

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "api",
        help="run the HTTP API (needs REDIS_URL and RCMSEG_API_TOKENS; see docs/service.md)",
        description="Run the HTTP API. Settings come from the environment (docs/service.md).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="HTTP worker processes (default 1)")
    parser.add_argument("--root-path", default="", help="path prefix when served behind a proxy")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from app.settings import get_settings

    settings = get_settings()  # refuses to start (exit 2, one line) when a required setting is missing
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
