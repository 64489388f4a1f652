"""The queue jobs of one mosaic shared out over workers: one job per band of window rows, then the merge.

The API enqueues ``worker.contract.BAND_FUNCTION`` once per band and ``MERGE_FUNCTION`` depending on all
of them (RQ ``depends_on``). Each band reads the mosaic, computes the windows of its rows and writes its
weighted sums into the parts folder (:mod:`worker.engine.bands`); a band whose file is already there
(written before its worker died) is not computed again, so a retried band redoes only itself. The merge
adds the sums, exports and writes the result as a one-worker job would, then removes the parts folder.

Every part polls the job's one cancel key, so a cancel stops the running bands between batches; the API
cancels the queued parts. Progress goes into each part's meta like a plain job's; the API sums the bands'
windows for the job's view.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Unpack

from rq import get_current_job
from rq.job import Job
from rq.timeouts import JobTimeoutException

from models.errors import RcmSegError
from worker.contract import SUMMARY_FILE, BandJobKwargs, ErrorCode, MergeJobKwargs
from worker.errors import JobCanceled
from worker.params import SegmentParams
from worker.progress import Progress
from worker.queue.job import JobReporter, MosaicGone, current_runtime

log = logging.getLogger(__name__)


def _current_job() -> Job:
    job = get_current_job()
    if job is None:
        raise RuntimeError("band and merge jobs must run inside an RQ job")
    return job


def _run(reporter: JobReporter, src: Path, data_dir: Path, work: Callable[[], None]) -> None:
    """``work()``, with its failure recorded in the job's meta as a plain job records it."""
    paths = {src: src.name, data_dir: "<data>"}
    try:
        if reporter.should_cancel():
            raise JobCanceled("canceled before it started")
        if not src.is_file():
            raise MosaicGone("the mosaic was deleted before the job could read it")
        work()
    except JobCanceled as exc:
        reporter.fail(exc.code, str(exc))
        raise
    except RcmSegError as exc:
        message = str(exc)
        for path, name in paths.items():
            message = message.replace(str(path), name)
        reporter.fail(exc.code, message)
        raise
    except JobTimeoutException:
        reporter.fail(
            ErrorCode.JOB_TIMEOUT, f"the job ran longer than its timeout ({reporter.job.timeout} s)"
        )
        raise
    except Exception as exc:
        reporter.fail(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"[:500])
        raise


def run_band_job(**kwargs: Unpack[BandJobKwargs]) -> dict[str, Any]:
    """Compute band ``band`` of ``bands`` of ``<data>/source`` into ``<data>/parts_dir``."""
    from worker.engine.bands import Band, band_done, bands_for, compute_band, write_band
    from worker.engine.device import default_batch_size
    from worker.io.mosaic import open_mosaic
    from worker.io.processing import processing_image
    from worker.plan import plan_for

    runtime, job = current_runtime(), _current_job()
    reporter = JobReporter(job, runtime, kwargs["cancel_key"])
    reporter.start()
    src, folder = runtime.data_dir / kwargs["source"], runtime.data_dir / kwargs["parts_dir"]
    index, count = kwargs["band"], kwargs["bands"]
    if band_done(folder, index):
        log.info("band %d of job %s already written", index, job.id)
        reporter.finish()
        return {"band": index}

    def work() -> None:
        model = runtime.model(kwargs["model"])
        params = SegmentParams.from_job(kwargs["params"])
        options = runtime.options
        mosaic = open_mosaic(src, max_pixels=options.max_pixels)
        plan = plan_for(params, mosaic.header, model.card)
        folder.mkdir(parents=True, exist_ok=True)
        scratch = Path(options.workdir) if options.workdir else folder
        image = processing_image(
            mosaic, plan.downsample, budget_bytes=options.memory_budget_bytes, workdir=scratch
        )
        bands = bands_for(image.shape, model.card.window, params, count)
        # a mosaic with fewer window rows than bands leaves the last bands empty
        band = bands[index] if index < len(bands) else Band(index=index, y0=0, y1=0, first=0, end=0)
        if band.first == band.end:
            reporter.progress(Progress("windows", 0, 0))
        device = model.device
        arrays, counts = compute_band(
            image,
            model,
            band,
            params=params,
            options=options,
            batch_size=options.batch_size or default_batch_size(device, model.card.window),
            scratch=scratch,
            progress=reporter.progress,
            should_cancel=reporter.should_cancel,
        )
        write_band(folder, band, arrays, counts)

    _run(reporter, src, runtime.data_dir, work)
    reporter.finish()
    return {"band": index}


def run_merge_job(**kwargs: Unpack[MergeJobKwargs]) -> dict[str, Any]:
    """Merge the bands in ``<data>/parts_dir`` and write the result into ``<data>/out_dir``."""
    from worker.engine.bands import merge_bands
    from worker.engine.pipeline import segment_mosaic

    runtime, job = current_runtime(), _current_job()
    reporter = JobReporter(job, runtime, kwargs["cancel_key"])
    reporter.start()
    src, out = runtime.data_dir / kwargs["source"], runtime.data_dir / kwargs["out_dir"]
    folder = runtime.data_dir / kwargs["parts_dir"]
    params = SegmentParams.from_job(kwargs["params"])

    def merged(image: Any, model: Any, **_: Any) -> Any:
        return merge_bands(folder, kwargs["bands"], image, model, params)

    def work() -> None:
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
        _run(reporter, src, runtime.data_dir, work)
    shutil.rmtree(folder, ignore_errors=True)
    reporter.finish()
    return {"out_dir": kwargs["out_dir"]}
