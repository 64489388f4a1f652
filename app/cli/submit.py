"""``rcmseg submit``: mosaic files and folders through a running service, each result downloaded.

The work is ``app.client.Batch``; this module parses the options, draws the progress bars and prints the
table at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.options import add_step_and_sigma
from models.errors import InvalidParameter

if TYPE_CHECKING:
    from app.client import Outcome

log = logging.getLogger("rcmseg.submit")

DEFAULT_SERVER = "http://127.0.0.1:8000"


def register(sub: Any) -> None:
    p = sub.add_parser(
        "submit",
        help="segment mosaic files and folders on a running service and download the results",
        description="Upload each mosaic to a running rcmseg service, submit a job, follow the jobs and "
        "download each result (summary.json, regions.geojson, heatmap.tif and submit.json, the record of "
        "what produced it) into OUT/<mosaic name>/, then print a table. A re-run skips results already "
        "downloaded; the service recognises mosaics and jobs it already has and computes nothing again. "
        "A file the service refuses is reported with the service's message and the others go on.",
        epilog="Exit status: 0 when every file has its result, 1 when any failed, 2 for a bad option, a "
        "token the service refuses or no service at --server.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="MOSAIC_OR_FOLDER",
        help="mosaic files (TIFF, PNG, JPEG, BMP, DICOM) or folders of them (not searched recursively); "
        "a DICOM series folder is sent as its base level",
    )
    p.add_argument(
        "--server", default=DEFAULT_SERVER, metavar="URL", help=f"the service (default {DEFAULT_SERVER})"
    )
    p.add_argument(
        "--token-file",
        type=Path,
        required=True,
        metavar="FILE",
        help="file holding the bearer token (rcmseg serve writes its own to <data folder>/local-token)",
    )
    p.add_argument("--model", default=None, help="a model of the service's zoo (default: the service's)")
    add_step_and_sigma(p)
    p.add_argument(
        "--out",
        type=Path,
        default=Path("results"),
        help="folder of the results, one sub-folder per mosaic (default ./results)",
    )
    p.add_argument(
        "--poll-s", type=float, default=1.0, help="seconds between polls of the running jobs (default 1)"
    )
    p.set_defaults(func=run)


def read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise InvalidParameter(f"{path}: cannot read the token file ({exc.strerror or exc})") from None
    if not token:
        raise InvalidParameter(f"{path}: the token file is empty")
    return token


class Bars:
    """Progress bars for a batch: one per upload, one for the jobs; off when stderr is not a terminal."""

    def __init__(self) -> None:
        self.disable = not sys.stderr.isatty()

    @contextlib.contextmanager
    def uploading(self, name: str, size: int) -> Iterator[Callable[[int], None]]:
        from tqdm import tqdm

        with tqdm(
            total=size, desc=f"upload {name}", unit="B", unit_scale=True, leave=False, disable=self.disable
        ) as bar:
            yield lambda sent: bar.update(sent - bar.n)

    @contextlib.contextmanager
    def following(self, total: int) -> Iterator[Callable[[float], None]]:
        from tqdm import tqdm

        with tqdm(total=total, desc="jobs", unit="job", disable=self.disable or total == 0) as bar:

            def show(done: float) -> None:
                bar.n = round(done, 2)
                bar.refresh()

            yield show

    def report(self, outcome: Outcome) -> None:
        if outcome.state == "failed":
            log.error("%s: %s", outcome.source, outcome.error)


def run(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from app.client import Batch, JobRequest, RcmsegClient, ServiceError, find_inputs

    if not args.verbose:  # httpx logs every request at INFO
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if not args.poll_s > 0:
        raise InvalidParameter(f"--poll-s must be > 0, got {args.poll_s}")
    sources = find_inputs(args.inputs)
    token = read_token(args.token_file)
    request = JobRequest(model=args.model, step=args.step, sigma=args.sigma)
    with RcmsegClient(args.server, token) as client, logging_redirect_tqdm():
        batch = Batch(client, out=args.out, request=request, progress=Bars(), poll_s=args.poll_s)
        try:
            outcomes = batch.run(sources)
        except ServiceError as exc:
            if exc.status == HTTPStatus.UNAUTHORIZED:  # say which server: a token of another one is common
                raise ServiceError(exc.code, f"{exc.message} for {args.server}", exc.status) from None
            raise
    print(table(outcomes))
    return 1 if any(o.state == "failed" for o in outcomes) else 0


def table(outcomes: list[Outcome]) -> str:
    """One row per file: what happened, the job, the aspecific area and the folder (or the error)."""
    rows = [("mosaic", "result", "job", "aspecific area", "folder or error")]
    for o in outcomes:
        area = o.summary.get("aspecific_area_fraction")
        rows.append(
            (
                o.source.name,
                _result(o),
                (o.job_id or "")[:8],
                "" if area is None else f"{100 * float(area):.2f} %",
                o.error or "" if o.state == "failed" else str(o.folder),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]) for r in rows]
    done = sum(o.state != "failed" for o in outcomes)
    lines.append(f"{done} of {len(outcomes)} {'mosaic' if len(outcomes) == 1 else 'mosaics'} with a result")
    return "\n".join(line.rstrip() for line in lines)


def _result(o: Outcome) -> str:
    if o.state == "skipped":
        return "already downloaded"
    if o.state == "failed":
        return f"failed ({o.error_code})"
    return "downloaded (job reused)" if o.reused else "downloaded"
