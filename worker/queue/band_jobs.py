"""The queue jobs of one mosaic shared out over workers: one job per band of window rows, then the merge.

The API enqueues ``worker.contract.BAND_FUNCTION`` once per band and ``MERGE_FUNCTION`` depending on all
of them (RQ ``depends_on``). Each band reads the mosaic, computes the windows of its rows and writes its
weighted sums into the job's own parts folder (:mod:`worker.engine.bands`), every file marked with the
job's id, parts key, band and rows; a band whose file is already there (written before its worker died)
is not computed again, so a retried band redoes only itself. ``parallel`` is a ceiling: a band beyond the
mosaic's window rows has nothing to compute and ends at once. The merge plans the bands again, takes only
files that are this job's and cover the rows it planned, exports and writes the result as a one-worker
job would.

The parts folder is removed when the job ends: by the merge when it has written the result, by any part
whose failure (or cancel) ends the job, and by the API's sweep for a job that ended otherwise (a band
killed with no retry left). Every part polls the job's one cancel key and its mosaic between batches, so a
cancel or a deleted mosaic stops the running bands at once; the API cancels the queued parts. Failures are
recorded as every queue job records them (:mod:`worker.queue.failures`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Unpack

from rq import get_current_job
from rq.job import Job

from worker.contract import SUMMARY_FILE, BandJobKwargs, MergeJobKwargs, Stage, parts_key
from worker.errors import BandMismatch
from worker.params import SegmentParams
from worker.progress import Progress
from worker.queue.failures import run_recorded
from worker.queue.job import JobReporter, current_runtime

log = logging.getLogger(__name__)


def _current_job() -> Job:
    job = get_current_job()
    if job is None:
        raise RuntimeError("band and merge jobs must run inside an RQ job")
    return job


def _checked_key(kwargs: BandJobKwargs | MergeJobKwargs) -> str:
    """The job's parts key, which must be the digest of the arguments this part was given."""
    key = parts_key(
        source=kwargs["source"], model=kwargs["model"], params=kwargs["params"], parallel=kwargs["parallel"]
    )
    if key != kwargs["parts_key"]:
        raise BandMismatch("this part's arguments are not those of the job it belongs to")
    return key


def run_band_job(**kwargs: Unpack[BandJobKwargs]) -> dict[str, Any]:
    """Compute band ``band`` of at most ``parallel`` of ``<data>/source`` into ``<data>/parts_dir``."""
    from worker.engine.bands import BandOwner, band_written, bands_for, compute_band, remove_parts, write_band
    from worker.engine.device import default_batch_size
    from worker.io.mosaic import open_mosaic
    from worker.io.processing import processing_image
    from worker.plan import plan_for

    runtime, job = current_runtime(), _current_job()
    src, folder = runtime.data_dir / kwargs["source"], runtime.data_dir / kwargs["parts_dir"]
    reporter = JobReporter(job, runtime, kwargs["cancel_key"], source=src)
    reporter.start()
    index = kwargs["band"]
    outcome = {"band": index, "computed": False}

    def work() -> None:
        owner = BandOwner(
            job_id=kwargs["job_id"], parts_key=_checked_key(kwargs), parallel=kwargs["parallel"]
        )
        if band_written(folder, index, owner):
            log.info("band %d of job %s already written", index, kwargs["job_id"])
            return
        model = runtime.model(kwargs["model"])
        params = SegmentParams.from_job(kwargs["params"])
        options = runtime.options
        mosaic = open_mosaic(src, max_pixels=options.max_pixels)
        plan = plan_for(params, mosaic.header, model.card)
        scratch = Path(options.workdir) if options.workdir else folder
        folder.mkdir(parents=True, exist_ok=True)
        image = processing_image(
            mosaic, plan.downsample, budget_bytes=options.memory_budget_bytes, workdir=scratch
        )
        bands = bands_for(image.shape, model.card.window, params, kwargs["parallel"])
        if index >= len(bands):  # ``parallel`` is a ceiling: the mosaic has fewer window rows
            log.info("band %d of job %s: the mosaic has %d bands only", index, kwargs["job_id"], len(bands))
            reporter.progress(Progress(Stage.WINDOWS, 0, 0))
            return
        arrays, counts = compute_band(
            image,
            model,
            bands[index],
            params=params,
            options=options,
            batch_size=options.batch_size or default_batch_size(model.device, model.card.window),
            scratch=scratch,
            progress=reporter.progress,
            should_cancel=reporter.should_cancel,
        )
        write_band(folder, bands[index], arrays, counts, owner=owner)
        outcome["computed"] = True

    run_recorded(
        reporter, work, source=src, roots=[runtime.data_dir], on_failure=lambda: remove_parts(folder)
    )
    reporter.finish()
    return outcome


def run_merge_job(**kwargs: Unpack[MergeJobKwargs]) -> dict[str, Any]:
    """Merge the bands in ``<data>/parts_dir`` and write the result into ``<data>/out_dir``."""
    from worker.engine.bands import BandOwner, merge_bands, remove_parts
    from worker.engine.pipeline import segment_mosaic

    runtime, job = current_runtime(), _current_job()
    src, out = runtime.data_dir / kwargs["source"], runtime.data_dir / kwargs["out_dir"]
    folder = runtime.data_dir / kwargs["parts_dir"]
    reporter = JobReporter(job, runtime, kwargs["cancel_key"], source=src)
    reporter.start()

    def work() -> None:
        owner = BandOwner(
            job_id=kwargs["job_id"], parts_key=_checked_key(kwargs), parallel=kwargs["parallel"]
        )
        params = SegmentParams.from_job(kwargs["params"])

        def merged(image: Any, model: Any, **_: Any) -> Any:
            return merge_bands(folder, kwargs["parallel"], image, model, params, owner=owner)

        segment_mosaic(
            src,
            runtime.model(kwargs["model"]),
            out,
            params=params,
            options=runtime.options,
            progress=reporter.progress,
            should_cancel=reporter.should_cancel,
            source_name=kwargs.get("source_name"),
            heat_fn=merged,
        )

    if not (out / SUMMARY_FILE).is_file():
        run_recorded(
            reporter,
            work,
            source=src,
            roots=[runtime.data_dir],
            on_failure=lambda: remove_parts(folder),
            done_elsewhere=(out / SUMMARY_FILE).is_file,  # an identical job finished the same result
        )
    remove_parts(folder)
    reporter.finish()
    return {"out_dir": kwargs["out_dir"]}
