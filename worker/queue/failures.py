"""The one failure policy of the queue jobs: how a failure is named, worded and recorded.

Every queue job that computes (a whole mosaic, a band, a merge) runs its work through ``run_recorded``, which
records ``error`` ``{code, message}`` in the job's meta and stops RQ from retrying (retries are for lost
workers only; these failures would happen again):

- a cancel asked by the owner is ``canceled``; a mosaic deleted before or while the job ran is
  ``mosaic_gone`` whatever the engine said about the file it lost;
- a known failure (``RcmSegError``) keeps its code and message, a timeout is ``job_timeout``, anything else
  is ``internal_error`` with the exception's type and message;
- a message never holds a server path: any path inside the data folder (or the folder itself) is written
  as its last name only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from rq.timeouts import JobTimeoutException

from models.errors import RcmSegError
from worker.contract import ErrorCode
from worker.errors import JobCanceled

if TYPE_CHECKING:
    from worker.queue.job import JobReporter

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_MESSAGE = 500
"""Longest error message recorded (an unexpected exception's text can be long)."""


class MosaicGone(RcmSegError, FileNotFoundError):
    """The job's mosaic was deleted (by its owner, or expired) before or while the job read it."""

    code = ErrorCode.MOSAIC_GONE.value

    def __init__(self, message: str = "the mosaic was deleted before the job could finish") -> None:
        super().__init__(message)


def public_message(message: str, roots: Iterable[Path]) -> str:
    """``message`` with every path under one of ``roots`` written as its last name (a root itself as
    "the data folder"), so that a client never sees where the worker keeps its files."""
    for root in sorted({str(r) for r in roots}, key=len, reverse=True):
        pattern = re.escape(root.rstrip("/")) + r"(/[^\s'\",:;)\]]*)?"
        message = re.sub(pattern, lambda m: Path(m[0]).name if m[1] else "the data folder", message)
    return message


def run_recorded(
    reporter: JobReporter,
    work: Callable[[], T],
    *,
    source: Path,
    roots: Iterable[Path],
    on_failure: Callable[[], None] = lambda: None,
    done_elsewhere: Callable[[], bool] = lambda: False,
) -> T | None:
    """``work()``; a failure is recorded in the job's meta (see the module's text), ``on_failure()`` runs,
    and the exception goes on to RQ. A job canceled, or whose mosaic is gone, before it starts does nothing.
    ``done_elsewhere()`` says whether an identical job wrote the same result meanwhile: then a known
    failure of this one is no failure, and ``None`` is returned."""
    roots = list(roots)
    try:
        if reporter.should_cancel():
            raise JobCanceled("canceled before it started")
        if not source.is_file():
            raise MosaicGone("the mosaic was deleted before the job could read it")
        return work()
    except JobCanceled as exc:
        if not reporter.canceled and not source.is_file():  # the engine stopped because the mosaic went
            _record(reporter, MosaicGone(), on_failure)
            raise MosaicGone() from None
        _record(reporter, exc, on_failure)
        raise
    except RcmSegError as exc:
        if done_elsewhere():
            return None
        if not source.is_file():  # deleted while it was read: that, not "damaged", is the reason
            _record(reporter, MosaicGone(), on_failure)
            raise MosaicGone() from None
        reporter.fail(exc.code, public_message(str(exc), roots)[:MAX_MESSAGE])
        on_failure()
        raise
    except JobTimeoutException:
        timeout = reporter.job.timeout
        reporter.fail(ErrorCode.JOB_TIMEOUT, f"the job ran longer than its timeout ({timeout} s)")
        on_failure()
        raise
    except Exception as exc:
        if not source.is_file():
            _record(reporter, MosaicGone(), on_failure)
            raise MosaicGone() from None
        message = public_message(f"{type(exc).__name__}: {exc}", roots)
        reporter.fail(ErrorCode.INTERNAL, message[:MAX_MESSAGE])
        on_failure()
        raise


def _record(reporter: JobReporter, exc: RcmSegError, on_failure: Callable[[], None]) -> None:
    reporter.fail(exc.code, str(exc))
    on_failure()
