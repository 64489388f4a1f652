"""Jobs as the API sees them: submitted to RQ by dotted name, read back, mapped to the public status.

Redis keys besides RQ's own, under the queue's name so that two deployments sharing one Redis never see each
other's jobs (all expire with the retention period):

- ``rcmseg:<queue>:owner:<owner>:jobs``: sorted set of the owner's job ids by creation time (for listing);
- ``rcmseg:<queue>:dedupe:<owner>:<result_key>``: the job that computes (or computed) that result;
- ``rcmseg:<queue>:submit:<owner>:<result_key>``: a lock held while one request decides whether that result
  needs a new job, so that identical concurrent submissions make one job;
- ``rcmseg:<queue>:cancel:<job_id>``: set when the owner asked to cancel; the worker polls it between batches.

A job's identity for reuse is its result key (:mod:`app.api.services.identity`).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis import Redis
from redis.exceptions import LockError, RedisError
from rq import Queue, Worker, worker_registration
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from app.api.errors import Conflict, NotFound
from app.api.schemas import JobOut
from app.api.services.fanout import cancel_parts, enqueue_parts
from app.api.services.identity import ModelChoice, result_key_for
from app.api.services.job_view import PublicStatus, job_view, public_status
from app.api.services.queue_options import segment_job_options
from app.settings import WorkerSettings
from app.storage import ID_PATTERN, MosaicRecord, Storage
from worker.contract import (
    JOB_FUNCTION,
    MetaKey,
    SegmentJobKwargs,
    Stage,
    parts_job_id,
    worker_silence_s,
)
from worker.params import SegmentParams

log = logging.getLogger(__name__)

PARTS_SWEEP_S = 5.0
"""Shortest time between two walks of the results folder for the parts folders of ended jobs."""

SUBMIT_LOCK_S = 10
"""Longest a submission holds its result's lock (it needs milliseconds; this bounds a crashed API's)."""


def _subdirs(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class JobQueue:
    """Submits, reads, lists and cancels one owner's jobs; finds abandoned ones."""

    def __init__(self, redis: Redis, settings: WorkerSettings, storage: Storage) -> None:
        self.redis = redis
        self.settings = settings
        self.storage = storage
        self.queue = Queue(settings.queue, connection=redis, serializer=JSONSerializer)
        self.prefix = f"rcmseg:{settings.queue}"
        self.parts_swept = -PARTS_SWEEP_S

    def owner_jobs_key(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}:jobs"

    def dedupe_key(self, owner: str, result_key: str) -> str:
        return f"{self.prefix}:dedupe:{owner}:{result_key}"

    def submit_lock_key(self, owner: str, result_key: str) -> str:
        return f"{self.prefix}:submit:{owner}:{result_key}"

    def cancel_key(self, job_id: str) -> str:
        return f"{self.prefix}:cancel:{job_id}"

    # -- reading -------------------------------------------------------------------------------------

    def fetch(self, owner: str, job_id: str) -> Job:
        """The owner's job; any other id (malformed, expired, someone else's) is the same 404."""
        if ID_PATTERN.match(job_id):
            try:
                job = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
            except NoSuchJobError:
                job = None
            if job is not None and self._belongs(job, owner):
                return job
        raise NotFound(f"no job {job_id!r}")

    def list(self, owner: str, *, limit: int) -> list[Job]:
        key = self.owner_jobs_key(owner)
        ids = [_text(i) for i in self.redis.zrevrange(key, 0, limit - 1)]  # type: ignore[union-attr]
        jobs = Job.fetch_many(ids, connection=self.redis, serializer=JSONSerializer)
        gone = [job_id for job_id, job in zip(ids, jobs, strict=True) if job is None]
        if gone:
            self.redis.zrem(key, *gone)
        return [j for j in jobs if j is not None and self._belongs(j, owner)]

    def _belongs(self, job: Job, owner: str) -> bool:
        """The owner's job on this deployment's queue (RQ's job keys are shared by every queue on a Redis)."""
        return job.origin == self.settings.queue and job.meta.get(MetaKey.OWNER) == owner

    def status(self, job: Job) -> PublicStatus:
        return public_status(self.redis, job)

    def view(self, job: Job, *, reused: bool = False, base: str = "") -> JobOut:
        """The public body of a job; ``reused`` when a submission returned it instead of a new job."""
        canceling = bool(self.redis.exists(self.cancel_key(job.id)))
        return job_view(self.redis, self.storage, job, cancel_requested=canceling, reused=reused, base=base)

    # -- writing -------------------------------------------------------------------------------------

    def submit(
        self,
        owner: str,
        mosaic: MosaicRecord,
        model: ModelChoice,
        params: SegmentParams,
        request: dict[str, Any],
    ) -> tuple[Job, bool]:
        """Queue a job (shared out over ``params.parallel`` workers), or return the job that already
        computed (or is computing) the same result.

        The check and the enqueue run under a per-result lock in Redis, so N identical submissions that
        arrive together make one job and N - 1 reuses of it."""
        result_key = result_key_for(mosaic.sha256, model, params)
        lock = self.redis.lock(
            self.submit_lock_key(owner, result_key),
            timeout=SUBMIT_LOCK_S,
            blocking_timeout=SUBMIT_LOCK_S,
            sleep=0.02,
        )
        if not lock.acquire():
            raise RedisError(f"the submit lock of result {result_key} stayed taken for {SUBMIT_LOCK_S} s")
        try:
            earlier = self._reusable(owner, result_key)
            if earlier is not None:
                self.storage.touch_result(owner, result_key)
                return earlier, True
            return self._enqueue(owner, mosaic, model, result_key, params, request), False
        finally:
            with contextlib.suppress(LockError):  # expired: the job was enqueued all the same
                lock.release()

    def _enqueue(
        self,
        owner: str,
        mosaic: MosaicRecord,
        model: ModelChoice,
        result_key: str,
        params: SegmentParams,
        request: dict[str, Any],
    ) -> Job:
        """The one place a segmentation job is queued: its meta, its kwargs (the contract), its RQ options."""
        job_id = uuid.uuid4().hex
        meta = {
            MetaKey.OWNER: owner,
            MetaKey.MOSAIC_ID: mosaic.id,
            MetaKey.MODEL: model.name,
            MetaKey.PARAMS: request,
            MetaKey.RESULT_KEY: result_key,
            MetaKey.STAGE: Stage.QUEUED,
            MetaKey.PROGRESS: 0.0,
            MetaKey.ATTEMPTS: 0,
        }
        kwargs: SegmentJobKwargs = {
            "source": self.storage.source_relpath(owner, mosaic),
            "source_name": mosaic.filename,
            "out_dir": self.storage.result_relpath(owner, result_key),
            "model": model.name,
            "params": params.model_dump(),
            "cancel_key": self.cancel_key(job_id),
        }
        self.storage.touch_mosaic(owner, mosaic.id)
        description = f"segment mosaic {mosaic.id} with {model.name}"
        if params.parallel > 1:
            job = enqueue_parts(
                self.queue,
                self.settings,
                job_id=job_id,
                kwargs=kwargs,
                meta=meta,
                parallel=params.parallel,
                description=description,
            )
        else:
            job = self.queue.enqueue_call(
                func=JOB_FUNCTION,
                kwargs=dict(kwargs),
                job_id=job_id,
                meta=meta,
                **segment_job_options(self.settings),
                description=description,
            )
        self._remember(owner, job, result_key)
        log.info("job queued", extra={"owner": owner, "job_id": job_id, "mosaic_id": mosaic.id})
        return job

    def _remember(self, owner: str, job: Job, result_key: str) -> None:
        """List the job under its owner and as the one computing its result key, both for the retention."""
        retention = self.settings.retention_s
        with self.redis.pipeline() as pipe:
            pipe.zadd(self.owner_jobs_key(owner), {job.id: job.created_at.timestamp()})
            pipe.expire(self.owner_jobs_key(owner), retention)
            pipe.set(self.dedupe_key(owner, result_key), job.id, ex=retention)
            pipe.execute()

    def _reusable(self, owner: str, result_key: str) -> Job | None:
        earlier_id = self.redis.get(self.dedupe_key(owner, result_key))
        if earlier_id is None:
            return None
        try:
            job = self.fetch(owner, _text(earlier_id))
        except NotFound:
            return None
        status = self.status(job)
        if status == "finished" and self.storage.result_dir(owner, result_key) is not None:
            return job
        if status in ("queued", "running") and not self.redis.exists(self.cancel_key(job.id)):
            return job
        return None

    def cancel(self, job: Job) -> Job:
        """Ask a queued or running job to stop: a queued job never starts, a running one stops between
        batches and frees its worker."""
        status = self.status(job)
        if status not in ("queued", "running"):
            raise Conflict(f"job {job.id} is {status}; only queued or running jobs can be canceled")
        # The flag comes first: a job that a worker picks up while we cancel it sees it at its start.
        self.redis.set(self.cancel_key(job.id), 1, ex=self.settings.retention_s)
        if job.get_status(refresh=True) in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):
            with contextlib.suppress(InvalidJobOperation):  # a concurrent request canceled it first
                job.cancel()
            self.redis.expire(job.key, self.settings.retention_s)  # RQ keeps canceled jobs forever
        if job.meta.get(MetaKey.PARTS):
            cancel_parts(self.redis, job)
        log.info("job cancel requested", extra={"owner": job.meta.get(MetaKey.OWNER), "job_id": job.id})
        job.refresh()
        return job

    # -- crash safety --------------------------------------------------------------------------------

    def reap_abandoned(self) -> None:
        """Retry or fail jobs whose worker stopped heartbeating (killed, out of memory, GPU fault).

        Workers do this too, but only between jobs; doing it here means a job is never reported running
        for longer than the heartbeat period after its worker died, even when no worker is left. The
        workers' own maintenance lock keeps two cleanups from retrying one job twice.
        """
        if not self.queue.acquire_maintenance_lock():
            return
        try:
            self.queue.started_job_registry.cleanup()
            now = time.monotonic()
            if now - self.parts_swept >= PARTS_SWEEP_S:  # a poll of a running job reaps too: walk less
                self.parts_swept = now
                self.remove_ended_parts()
        finally:
            self.queue.release_maintenance_lock()

    def remove_ended_parts(self) -> int:
        """Delete the parts folders (bands' sums) of shared-out jobs of this queue that have ended; returns
        how many. The worker removes them itself at a job's end, except where no worker saw the end (a
        band killed with no retry left, a band still writing when another failed). Folders of jobs this
        Redis does not know are left to the storage sweep, which removes them once they are stale."""
        removed = 0
        for owner_dir in _subdirs(self.storage.results):
            for entry in _subdirs(owner_dir):
                job_id = parts_job_id(entry.name)
                if job_id is None or not ID_PATTERN.match(job_id):
                    continue
                job = Job.fetch_many([job_id], connection=self.redis, serializer=JSONSerializer)[0]
                if job is None or job.origin != self.settings.queue:
                    continue
                if self.status(job) in ("finished", "failed", "canceled"):
                    shutil.rmtree(entry, ignore_errors=True)
                    removed += 1
        if removed:
            log.info("removed the parts folders of %d ended jobs", removed)
        return removed

    def live_workers(self) -> int:
        """Workers of this queue that heartbeat; registrations of dead ones (a worker killed, or cut off
        while Redis was down) are removed."""
        silence_s = worker_silence_s(self.settings.job_heartbeat_s)
        now = datetime.now(UTC)
        live = 0
        for worker in Worker.all(queue=self.queue):
            beat = worker.last_heartbeat
            if beat is not None and beat.tzinfo is None:
                beat = beat.replace(tzinfo=UTC)
            if beat is not None and (now - beat).total_seconds() <= silence_s:
                live += 1
                continue
            log.info("removing the registration of dead worker %s", worker.name)
            with self.redis.pipeline() as pipe:
                worker_registration.unregister(worker, pipeline=pipe)
                pipe.delete(worker.key)
                pipe.execute()
        return live
