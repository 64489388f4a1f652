"""The one contract between the API and the worker: what a job is called, takes, reports and leaves behind.

The API enqueues ``JOB_FUNCTION`` by name with ``SegmentJobKwargs`` (JSON; paths relative to the data
folder) and reads the job's meta (``MetaKey``: its ``Stage``, its progress by ``overall_progress``, its
``ErrorCode``) while it runs; the worker writes them. A finished job leaves ``RESULT_FILES`` and the Deep
Zoom ``LAYERS`` in its result folder, ``SUMMARY_FILE`` last of all, so a result is complete exactly when its
summary exists; the API reads the summary through ``SummaryFields``. Imports no torch, no rq.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NotRequired, TypedDict

JOB_FUNCTION: Final = "worker.queue.job.run_segment_job"
"""Dotted path of the queue job (``worker.queue.job.run_segment_job``), enqueued by name."""


class SegmentJobKwargs(TypedDict):
    """The keyword arguments of ``JOB_FUNCTION``."""

    source: str
    """The mosaic file, relative to the data folder."""
    out_dir: str
    """The result folder to write (atomically), relative to the data folder."""
    model: str
    """A zoo model's folder name."""
    params: dict[str, Any]
    """``worker.params.SegmentParams`` as a dict."""
    cancel_key: str
    """The Redis key whose presence asks the job to stop."""
    source_name: NotRequired[str]
    """The mosaic's name as the user uploaded it, for the summary (the stored file is ``source.<ext>``)."""


class MetaKey(StrEnum):
    """Keys of a job's RQ meta: the API writes the first group at submit, the worker the rest."""

    OWNER = "owner"
    MOSAIC_ID = "mosaic_id"
    MODEL = "model"
    PARAMS = "params"
    RESULT_KEY = "result_key"
    STAGE = "stage"
    PROGRESS = "progress"
    WINDOWS_DONE = "windows_done"
    WINDOWS_TOTAL = "windows_total"
    ETA_S = "eta_s"
    ATTEMPTS = "attempts"
    PARTS = "parts"
    """On a job shared out over workers (its merge job, the one the API shows): the ids of its band jobs."""
    PART_OF = "part_of"
    """On a band job: the id of the job it is a part of."""
    ERROR = "error"
    """``{code, message}`` when the job failed or was canceled."""


class Stage(StrEnum):
    """What a job is doing, as its meta's ``stage`` says: the engine's three stages between the queue's."""

    QUEUED = "queued"
    STARTING = "starting"
    READ = "read"
    WINDOWS = "windows"
    EXPORT = "export"
    FINISHED = "finished"


STAGE_SPAN: Final[dict[str, tuple[float, float]]] = {
    Stage.READ: (0.0, 0.05),
    Stage.WINDOWS: (0.05, 0.9),
    Stage.EXPORT: (0.9, 1.0),
}
"""Where each engine stage sits in a job's overall progress fraction (0..1)."""


def overall_progress(stage: str, done: int, total: int) -> float:
    """A job's progress (0..1) when ``done`` of ``total`` units of ``stage`` are done: the one formula the
    worker writes and the API computes for a job shared out over workers."""
    lo, hi = STAGE_SPAN.get(stage, (0.0, 1.0))  # a StrEnum member hashes as its value
    fraction = done / total if total > 0 else 0.0
    return round(lo + (hi - lo) * min(max(fraction, 0.0), 1.0), 4)


class ErrorCode(StrEnum):
    """Error codes a job records besides the ``code`` of each ``RcmSegError`` subclass."""

    CANCELED = "canceled"
    JOB_TIMEOUT = "job_timeout"
    INTERNAL = "internal_error"
    WORKER_LOST = "worker_lost"
    MOSAIC_GONE = "mosaic_gone"
    """The mosaic was deleted before the job could read it."""
    RESULT_EXPIRED = "result_expired"
    BAND_MISMATCH = "band_mismatch"
    """A band file of a job shared out over workers came from another job or run of parameters, or does not
    cover the rows it claims: the merge refuses it rather than write a wrong heatmap."""


RQ_DEQUEUE_MARGIN_S: Final = 15
"""An idle RQ worker waits ``worker_ttl - 15`` s for a job (its ``dequeue_timeout``), then heartbeats."""


def worker_ttl_s(heartbeat_s: int) -> int:
    """The ``worker_ttl`` a worker runs with, and how long its registration lives without a heartbeat:
    chosen so that an idle worker heartbeats at least twice per ``heartbeat_s`` (every ``ttl - 15`` s); a
    busy one heartbeats four times per ``heartbeat_s`` from a thread of its own."""
    return RQ_DEQUEUE_MARGIN_S + max(1, heartbeat_s // 2)


def worker_silence_s(heartbeat_s: int) -> int:
    """A worker silent for longer than this is dead (killed, or cut off from Redis): one heartbeat period,
    in which a live worker, idle or busy, heartbeats at least twice. The API counts only the others."""
    return heartbeat_s


SUMMARY_FILE: Final = "summary.json"
HEATMAP_TIFF: Final = "heatmap.tif"
MASK_TIFF: Final = "mask.tif"
REGIONS_GEOJSON: Final = "regions.geojson"
HEAT_HISTOGRAM: Final = "heat_histogram.json"
"""``{"bins": n, "counts": [...]}``: pixels with heat in ``[k/n, (k+1)/n)`` (the last bin includes 1), so
the area at or above any threshold on the ``1/n`` grid is a sum, with no pass over the heatmap."""

HEATMAP_OME_TIFF: Final = "heatmap.ome.tif"
"""The heat as a pyramidal OME-TIFF with its physical pixel size (QuPath, napari)."""
SEGMENTATION_DICOM: Final = "segmentation.dcm"
"""Of a DICOM mosaic only: the mask as a BINARY DICOM Segmentation of the source image."""
PROBABILITY_DICOM: Final = "probability.dcm"
"""Of a DICOM mosaic only: the heat as a FRACTIONAL (PROBABILITY) DICOM Segmentation of the source image."""
DICOM_RESULT_FILES: Final = {SEGMENTATION_DICOM: "application/dicom", PROBABILITY_DICOM: "application/dicom"}

RESULT_FILES: Final = {
    REGIONS_GEOJSON: "application/geo+json",
    HEATMAP_TIFF: "image/tiff",
    MASK_TIFF: "image/tiff",
    SUMMARY_FILE: "application/json",
    HEAT_HISTOGRAM: "application/json",
    HEATMAP_OME_TIFF: "image/tiff",
}
"""Downloadable files of a result, with their media types."""


@dataclass(frozen=True)
class SummaryFields:
    """The fields of a result's ``SUMMARY_FILE`` that the API reads, typed (``worker.engine.summary``
    writes them); the rest of the summary passes to clients as it is."""

    threshold: float
    """The threshold the mask and regions were made at."""
    downsample: int
    """Processing resolution: mosaic pixels per heatmap pixel."""
    input_format: str | None
    """The mosaic's format (``dicom``, ``tiff``, ...)."""
    rendered: bool
    """The heat is stored as a pyramid (``HEAT_LAYER``) and the summary lists its layers; results written
    before have the full-resolution ``LAYERS`` as files instead."""
    bands: int
    """How many bands of a job shared out over workers ran (``parallel`` is a ceiling); 0 for a plain job."""

    @classmethod
    def read(cls, summary: Mapping[str, Any]) -> SummaryFields:
        """The fields of a parsed summary (a summary without a threshold is no result of this service)."""
        if not isinstance(summary.get("threshold"), int | float):
            raise ValueError("the summary has no threshold")
        processing = summary.get("processing") or {}
        source = summary.get("input") or {}
        parallel = summary.get("parallel") or {}
        return cls(
            threshold=float(summary["threshold"]),
            downsample=int(processing.get("downsample", 1)),
            input_format=source.get("format"),
            rendered="layers" in summary,
            bands=len(parallel.get("bands") or []),
        )


LAYERS: Final = ("mosaic", "heatmap", "mask")
"""Deep Zoom layers of a result: ``<layer>.dzi`` and ``<layer>_files/``."""

HEAT_LAYER: Final = "heat"
"""The heat stored once more as an 8-bit grey Deep Zoom pyramid at processing resolution (``heat.dzi``,
``heat_files/``; grey value ``round(255 * heat)``). Results written before it have the full-resolution
``LAYERS`` as files instead."""

RENDERED_LAYERS: Final = ("heatmap", "mask")
"""The layers the API colours from ``HEAT_LAYER`` on request: the heatmap through a colormap, the mask as
``heat >= threshold``. Their descriptors are ``heat.dzi``; their tiles PNGs of the same grid."""

RESULT_CACHE: Final = "cache"
"""Files the API derives from a result on request (regions at another threshold), inside its folder."""

MOSAIC_LAYER: Final = "mosaic"
MOSAIC_FORMAT: Final = "jpeg"
"""The tile format of a mosaic's pyramid (``mosaic_files/<level>/<col>_<row>.jpeg``)."""
MOSAIC_PYRAMID: Final = "pyramid"
"""The folder, inside a stored mosaic's folder, of its Deep Zoom pyramid: ``mosaic.dzi``, ``mosaic_files/``.
It appears by rename, complete, so it is ready exactly when ``mosaic.dzi`` exists in it."""

PREPARE_FUNCTION: Final = "worker.queue.prepare.run_prepare_job"
"""Dotted path of the queue job that builds a stored mosaic's pyramid, enqueued by name after upload."""


class PrepareJobKwargs(TypedDict):
    """The keyword arguments of ``PREPARE_FUNCTION``."""

    source: str
    """The mosaic file, relative to the data folder."""
    out_dir: str
    """The pyramid folder to write (atomically), relative to the data folder."""


BAND_FUNCTION: Final = "worker.queue.band_jobs.run_band_job"
"""Dotted path of one band of a job shared out over workers (``parallel: N``): the band's weighted sums."""

MERGE_FUNCTION: Final = "worker.queue.band_jobs.run_merge_job"
"""Dotted path of the job that merges the bands, exports and writes the result; it depends on every band
(RQ ``depends_on``), so it starts when the last band has finished. Its id is the job's public id."""


class BandJobKwargs(TypedDict):
    """The keyword arguments of ``BAND_FUNCTION``."""

    job_id: str
    """The id of the job this band is a part of (its merge job's id)."""
    source: str
    model: str
    params: dict[str, Any]
    parts_dir: str
    """The job's own folder, relative to the data folder, where every band writes ``band-<i>.npz`` and
    ``.json`` (``parts_relpath``)."""
    parts_key: str
    """``parts_key`` of the job: every band file carries it, and the merge takes only files that do."""
    band: int
    parallel: int
    """How many bands the job asked for (a ceiling: a mosaic with fewer window rows runs fewer)."""
    cancel_key: str
    """The job's cancel key, shared by every part of it."""


class MergeJobKwargs(TypedDict):
    """The keyword arguments of ``MERGE_FUNCTION``."""

    job_id: str
    source: str
    out_dir: str
    model: str
    params: dict[str, Any]
    parts_dir: str
    parts_key: str
    parallel: int
    cancel_key: str
    source_name: NotRequired[str]


def band_job_id(job_id: str, band: int) -> str:
    """The RQ id of band ``band`` of job ``job_id``."""
    return f"{job_id}-band-{band}"


def parts_key(*, source: str, model: str, params: dict[str, Any], parallel: int) -> str:
    """A digest of everything a band's sums depend on (mosaic, model, every parameter, ``parallel``)."""
    text = json.dumps(
        {"source": source, "model": model, "params": params, "parallel": parallel},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


PARTS_MARK: Final = ".parts-"
"""What names a parts folder: ``.<result>.parts-<job id>-<parts key>``, beside the result folder."""


def parts_relpath(result_relpath: str, job_id: str, key: str) -> str:
    """Where the bands of job ``job_id`` keep their sums: a hidden folder beside its result, named for
    that job alone (its id and ``parts_key``), so no other job, nor the same one asked with other
    parameters or another ``parallel``, can ever read them."""
    head, _, name = result_relpath.rstrip("/").rpartition("/")
    folder = f".{name}{PARTS_MARK}{job_id}-{key}"
    return f"{head}/{folder}" if head else folder


def parts_job_id(folder_name: str) -> str | None:
    """The job id in a parts folder's name, or ``None`` for any other name."""
    _, mark, rest = folder_name.partition(PARTS_MARK)
    job_id, dash, _key = rest.rpartition("-")
    return job_id if mark and dash and job_id else None
