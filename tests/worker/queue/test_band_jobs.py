"""The band and merge jobs in a burst worker of this process: a real Redis, the tiny model, real files.

A band's failure is recorded as a plain job's (no server path in it), a cancel or a deleted mosaic stops a
band between batches, and the job's parts folder goes with the job's end.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from rq import Queue
from rq.job import Job, JobStatus

from tests.worker.queue.conftest import slow_network, work
from worker.contract import BAND_FUNCTION, BandJobKwargs, parts_key, parts_relpath

PARAMS = {"step": 8, "pixel_size_um": 2.0}


def enqueue_band(setup: dict[str, Any], *, band: int = 0, parallel: int = 2, **changes: Any) -> Job:
    """Band ``band`` of a new job over the setup's mosaic (``changes`` replace its keyword arguments)."""
    job_id = uuid.uuid4().hex
    key = parts_key(source="uploads/m.png", model="tiny", params=PARAMS, parallel=parallel)
    kwargs: BandJobKwargs = {
        "job_id": job_id,
        "source": "uploads/m.png",
        "model": "tiny",
        "params": PARAMS,
        "parts_dir": parts_relpath(f"results/{job_id}", job_id, key),
        "parts_key": key,
        "band": band,
        "parallel": parallel,
        "cancel_key": f"test:cancel:{job_id}",
    }
    kwargs.update(changes)  # type: ignore[typeddict-item]
    queue: Queue = setup["queue"]
    return queue.enqueue_call(func=BAND_FUNCTION, kwargs=dict(kwargs), job_id=f"{job_id}-band-{band}")


def parts_dir(setup: dict[str, Any], job: Job) -> Path:
    return Path(setup["data"]) / job.kwargs["parts_dir"]


def test_a_band_writes_its_file_once(setup: dict[str, Any]) -> None:
    job = enqueue_band(setup)
    work(setup)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED, job.meta
    assert job.return_value() == {"band": 0, "computed": True}
    assert (parts_dir(setup, job) / "band-0.json").is_file()
    again = setup["queue"].enqueue_call(func=BAND_FUNCTION, kwargs=job.kwargs, job_id=f"{job.id}-again")
    work(setup)
    assert again.return_value() == {"band": 0, "computed": False}  # its file was this job's: kept


def test_a_band_failure_shows_no_server_path(setup: dict[str, Any]) -> None:
    """The band's folder cannot be made (a file is in its way): the job's error names no path of the
    data folder, and the job is not retried."""
    job = enqueue_band(setup)
    blocker = parts_dir(setup, job)
    blocker.parent.mkdir(parents=True)
    blocker.write_text("in the way")
    work(setup)
    job.refresh()
    assert job.get_status() == JobStatus.FAILED
    error = job.meta["error"]
    assert error["code"] == "internal_error" and blocker.name in error["message"], error
    assert str(setup["data"]) not in error["message"] and "/" not in error["message"], error


def test_a_band_of_other_arguments_than_its_job_is_refused(setup: dict[str, Any]) -> None:
    job = enqueue_band(setup, params={**PARAMS, "step": 16})  # the parts key is that of step 8
    work(setup)
    job.refresh()
    assert job.get_status() == JobStatus.FAILED and job.meta["error"]["code"] == "band_mismatch"
    assert not parts_dir(setup, job).exists()


def test_a_canceled_band_stops_between_batches_and_removes_the_parts_folder(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = enqueue_band(setup, band=1)
    folder = parts_dir(setup, job)
    folder.mkdir(parents=True)
    (folder / "band-0.json").write_text("{}")  # what another band of the job had written
    cancel = job.kwargs["cancel_key"]
    slow_network(monkeypatch, 0.05, hook=lambda n: setup["redis"].set(cancel, 1) if n == 3 else None)
    work(setup)
    job.refresh()
    assert job.get_status() == JobStatus.FAILED and job.meta["error"]["code"] == "canceled"
    assert 0 < job.meta["windows_done"] < job.meta["windows_total"]
    assert not folder.exists()


def test_a_band_stops_when_its_mosaic_is_deleted(
    setup: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = enqueue_band(setup)
    mosaic = Path(setup["data"]) / "uploads" / "m.png"
    slow_network(monkeypatch, 0.05, hook=lambda n: mosaic.unlink() if n == 3 else None)
    work(setup)
    job.refresh()
    assert job.get_status() == JobStatus.FAILED and job.meta["error"]["code"] == "mosaic_gone"
    assert 0 < job.meta["windows_done"] < job.meta["windows_total"]  # it did not compute the rest
    assert not parts_dir(setup, job).exists()


def test_a_band_beyond_the_mosaics_window_rows_ends_at_once(setup: dict[str, Any]) -> None:
    """300 px at step 64 has five window rows: band 5 of 6 has nothing to do (``parallel`` is a ceiling)."""
    params = {"step": 64, "pixel_size_um": 2.0}
    key = parts_key(source="uploads/m.png", model="tiny", params=params, parallel=6)
    job = enqueue_band(setup, band=5, parallel=6, params=params, parts_key=key)
    work(setup)
    job.refresh()
    assert job.get_status() == JobStatus.FINISHED, job.meta
    assert job.return_value() == {"band": 5, "computed": False}
    assert job.meta["windows_total"] == 0
