"""Many mosaics through a running service: upload, submit, follow, download, each file on its own.

A file's result lands in ``<out>/<mosaic name>/`` with a record (``submit.json``) of what produced it; a
later run finds the record and skips that file without contacting the service. Anything else is left to
the service's duplicate detection: the same bytes are the same mosaic (found in the owner's list, so not
uploaded again), and the same mosaic, model and parameters the same job (``reused``). A file that fails
(the service refuses it, or its job fails) is reported with the service's own message and the others go on;
a service that cannot be reached, or refuses the token, ends the batch with its ``ServiceError``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from app.client.client import RESULT_DOWNLOADS, RcmsegClient
from app.client.errors import ServiceError
from app.client.inputs import RECORD_FILE, mosaic_name, read_record, read_summary
from app.client.responses import Job, Mosaic
from worker.io.files import file_sha256, swap_into_place

log = logging.getLogger(__name__)

State = Literal["pending", "downloaded", "skipped", "failed"]


@dataclass(frozen=True, kw_only=True)
class JobRequest:
    """The job options of a batch; ``None`` is not sent, so the service applies the model card's default."""

    model: str | None = None
    step: int | None = None
    sigma: float | str | None = None


@dataclass
class Outcome:
    """What happened to one input file. ``error`` is the service's message when ``state`` is failed;
    ``uploaded`` is false when the service had the mosaic already, ``reused`` true when it matched the
    submission to an earlier identical job."""

    name: str
    source: Path
    folder: Path
    state: State = "pending"
    mosaic: Mosaic | None = None
    job: Job | None = None
    job_id: str | None = None
    error: str | None = None
    error_code: str | None = None
    sha256: str = ""
    uploaded: bool = False
    reused: bool = False
    summary: dict[str, Any] = field(default_factory=dict)

    def fail(self, code: str, message: str) -> None:
        self.state, self.error_code, self.error = "failed", code, message


class BatchProgress(Protocol):
    """How a batch shows its progress (the command line draws bars; the default shows nothing)."""

    def uploading(self, name: str, size: int) -> AbstractContextManager[Callable[[int], None]]:
        """Around one upload; the callable gets the bytes sent so far."""
        ...

    def following(self, total: int) -> AbstractContextManager[Callable[[float], None]]:
        """Around following ``total`` jobs; the callable gets how many jobs' worth are done (fractional)."""
        ...

    def report(self, outcome: Outcome) -> None:
        """A file's outcome, as soon as it is known."""
        ...


class Quiet:
    """A ``BatchProgress`` that shows nothing."""

    @contextlib.contextmanager
    def uploading(self, name: str, size: int) -> Iterator[Callable[[int], None]]:
        yield lambda _sent: None

    @contextlib.contextmanager
    def following(self, total: int) -> Iterator[Callable[[float], None]]:
        yield lambda _done: None

    def report(self, outcome: Outcome) -> None:
        return None


class Batch:
    """One run over many files against one service (see the module's description)."""

    def __init__(
        self,
        client: RcmsegClient,
        *,
        out: Path,
        request: JobRequest,
        progress: BatchProgress | None = None,
        poll_s: float = 1.0,
        patience_s: float = 120.0,
    ) -> None:
        self.client = client
        self.out = out
        self.request = request
        self.progress = progress or Quiet()
        self.poll_s = poll_s
        self.patience_s = patience_s
        self._known: dict[str, Mosaic] | None = None

    def run(self, sources: Sequence[Path]) -> list[Outcome]:
        """Every file through the service; one outcome per file, in the order given. The output folder is
        made at the first download, so a batch the service refuses at once leaves nothing behind."""
        outcomes = [Outcome(mosaic_name(s), s, self.out / mosaic_name(s)) for s in sources]
        for outcome in outcomes:
            self._start(outcome)
            if outcome.state != "pending":
                self.progress.report(outcome)
        self._follow([o for o in outcomes if o.state == "pending"])
        return outcomes

    # -- one file: record, upload, submit ------------------------------------------------------------------

    def _start(self, outcome: Outcome) -> None:
        try:
            sha256 = file_sha256(outcome.source)
        except OSError as exc:
            outcome.fail("unreadable_file", f"cannot read the file: {exc.strerror or exc}")
            return
        outcome.sha256 = sha256
        record = self._record(sha256)
        if self._already_downloaded(outcome.folder, record):
            outcome.state = "skipped"
            outcome.job_id = read_record(outcome.folder).get("job_id")
            outcome.summary = read_summary(outcome.folder)
            return
        self._list_mosaics()  # a service that is away or refuses the token ends the batch here
        try:
            outcome.mosaic, outcome.uploaded = self._mosaic(outcome.source, sha256)
            outcome.job = self.client.submit_job(
                outcome.mosaic.id, model=self.request.model, step=self.request.step, sigma=self.request.sigma
            )
            outcome.job_id, outcome.reused = outcome.job.id, outcome.job.reused
        except ServiceError as exc:
            outcome.fail(exc.code, without_name(exc.message, outcome.source.name))
        except OSError as exc:
            outcome.fail("unreadable_file", f"cannot read the file: {exc.strerror or exc}")

    def _record(self, sha256: str) -> dict[str, Any]:
        return {"server": self.client.server, "sha256": sha256, "request": asdict(self.request)}

    def _already_downloaded(self, folder: Path, wanted: dict[str, Any]) -> bool:
        record = read_record(folder)
        files = record.get("files") or []
        same = all(record.get(k) == v for k, v in wanted.items())
        return same and bool(files) and all((folder / str(name)).is_file() for name in files)

    def _list_mosaics(self) -> dict[str, Mosaic]:
        """The owner's mosaics by SHA-256, asked once (only when a file needs the service), waiting out a
        busy or briefly unavailable service (429, 503) for up to ``patience_s``; any other error is the
        batch's: a refused token, or no service at that address (a wrong URL, most likely: not waited for)."""
        give_up = time.monotonic() + self.patience_s
        while self._known is None:
            try:
                self._known = {m.sha256: m for m in self.client.list_mosaics()}
            except ServiceError as exc:
                if exc.status is None or not exc.transient or time.monotonic() >= give_up:
                    raise
                time.sleep(min(exc.retry_after_s or 2.0, 10.0))
        return self._known

    def _mosaic(self, source: Path, sha256: str) -> tuple[Mosaic, bool]:
        """The service's mosaic of these bytes: one it already holds, else a new upload (and whether the
        bytes were sent)."""
        known_mosaics = self._list_mosaics()
        known = known_mosaics.get(sha256)
        if known is not None:
            return known, False
        with self.progress.uploading(source.name, source.stat().st_size) as sent:
            mosaic = self.client.upload_mosaic(source, on_bytes=sent)
        known_mosaics[sha256] = mosaic
        return mosaic, True

    # -- all files: follow the jobs, download each result as it ends ---------------------------------------

    def _follow(self, pending: list[Outcome]) -> None:
        with self.progress.following(len(pending)) as show:
            waiting = list(pending)
            while waiting:
                for outcome in list(waiting):
                    self._poll(outcome)
                    if outcome.state != "pending":
                        waiting.remove(outcome)
                        self.progress.report(outcome)
                show(sum(_jobs_done(o) for o in pending))
                if waiting:
                    time.sleep(self.poll_s)

    def _poll(self, outcome: Outcome) -> None:
        job = outcome.job
        if job is None:  # not submitted: nothing to follow
            return
        try:
            if not job.ended:
                job = outcome.job = self.client.poll_job(job.id, patience_s=self.patience_s)
            if not job.ended:
                return
            if job.status != "finished":
                error = job.error
                outcome.fail(
                    error.code if error else job.status,
                    error.message if error else f"the job ended {job.status}",
                )
                return
            self._download(outcome, job)
        except ServiceError as exc:
            outcome.fail(exc.code, exc.message)
        except OSError as exc:
            outcome.fail("write_failed", f"cannot write {outcome.folder}: {exc.strerror or exc}")

    def _download(self, outcome: Outcome, job: Job) -> None:
        """The result's files into a temporary folder, the record last, then swapped into place whole."""
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / f".{outcome.name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            written = self.client.download_result(job.id, tmp, files=RESULT_DOWNLOADS)
            record = {
                **self._record(outcome.sha256),
                "source": str(outcome.source),
                "mosaic_id": job.mosaic_id,
                "job_id": job.id,
                "model": job.model,
                "params": job.params,
                "finished_at": job.finished_at,
                "files": [p.name for p in written],
            }
            (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            swap_into_place(tmp, outcome.folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        outcome.state = "downloaded"
        outcome.summary = read_summary(outcome.folder)


def without_name(message: str, name: str) -> str:
    """The service's message about an upload without the file name it starts with (the outcome names the
    file already)."""
    return message.removeprefix(f"{name}: ")


def _jobs_done(outcome: Outcome) -> float:
    """How much of one job is done, 0..1 (an ended one counts whole)."""
    if outcome.state != "pending":
        return 1.0
    return outcome.job.progress if outcome.job is not None else 0.0
