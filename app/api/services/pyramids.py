"""A stored mosaic's Deep Zoom pyramid, as the API sees it: ready, being prepared, or to be prepared.

After an upload the API enqueues one prepare job (``worker.contract.PREPARE_FUNCTION``) at the front of the
queue. ``rcmseg:<queue>:prepare:<owner>:<mosaic_id>`` holds the id of the job that prepares it, set only when
absent (``SET NX``), so concurrent requests enqueue it once. A mosaic with no pyramid and no live prepare job
(uploaded before pyramids were per mosaic, or its job failed or expired) gets a new job when it is next read.
"""

from __future__ import annotations

import logging
import uuid
from typing import Literal

from redis import WatchError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from app.api.services.job_queue import JobQueue
from app.storage import MosaicRecord
from worker.contract import PREPARE_FUNCTION, PrepareJobKwargs

log = logging.getLogger(__name__)

PyramidState = Literal["ready", "preparing"]
PREPARE_TIMEOUT_S = 3600
LIVE = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Pyramids:
    """Readiness of an owner's mosaic pyramids, and the prepare jobs that build them."""

    def __init__(self, jobs: JobQueue) -> None:
        self.jobs = jobs
        self.redis = jobs.redis

    def key(self, owner: str, mosaic_id: str) -> str:
        return f"{self.jobs.prefix}:prepare:{owner}:{mosaic_id}"

    def state(self, owner: str, record: MosaicRecord) -> PyramidState:
        """``ready`` when the pyramid is complete; otherwise make sure a prepare job is queued or running."""
        if self.jobs.storage.pyramid_dir(owner, record.id) is not None:
            return "ready"
        self.ensure(owner, record)
        return "preparing"

    def ensure(self, owner: str, record: MosaicRecord) -> None:
        """Enqueue the prepare job of this mosaic unless one is queued or running."""
        key = self.key(owner, record.id)
        earlier = self.redis.get(key)
        if earlier is not None and not self._live(_text(earlier)):
            self._forget(key, earlier)
        job_id = uuid.uuid4().hex
        if not self.redis.set(key, job_id, nx=True, ex=self.jobs.settings.retention_s):
            return
        kwargs: PrepareJobKwargs = {
            "source": self.jobs.storage.source_relpath(owner, record),
            "out_dir": self.jobs.storage.pyramid_relpath(owner, record.id),
        }
        self.jobs.queue.enqueue_call(
            func=PREPARE_FUNCTION,
            kwargs=dict(kwargs),
            timeout=PREPARE_TIMEOUT_S,
            result_ttl=600,
            failure_ttl=self.jobs.settings.retention_s,
            job_id=job_id,
            at_front=True,
            description=f"prepare the pyramid of mosaic {record.id}",
        )
        log.info("pyramid prepare queued", extra={"owner": owner, "mosaic_id": record.id, "job_id": job_id})

    def _live(self, job_id: str) -> bool:
        try:
            job = Job.fetch(job_id, connection=self.redis, serializer=JSONSerializer)
        except NoSuchJobError:
            return False
        return job.get_status(refresh=False) in LIVE

    def _forget(self, key: str, job_id: object) -> None:
        """Delete ``key`` if it still names ``job_id`` (another request may have replaced it meanwhile)."""
        with self.redis.pipeline() as pipe:
            try:
                pipe.watch(key)
                if pipe.get(key) == job_id:
                    pipe.multi()
                    pipe.delete(key)
                    pipe.execute()
            except WatchError:
                pass
