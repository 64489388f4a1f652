"""The one contract between the API and the worker: what a job is called, takes, reports and leaves behind.

The API enqueues ``JOB_FUNCTION`` by name with ``SegmentJobKwargs`` (JSON; paths relative to the data
folder) and reads the job's meta (``MetaKey``) while it runs; the worker writes them. A finished job leaves
``RESULT_FILES`` and the Deep Zoom ``LAYERS`` in its result folder, ``SUMMARY_FILE`` last of all, so a
result is complete exactly when its summary exists. Imports no torch, no rq.
"""

from __future__ import annotations

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


STAGE_SPAN: Final = {"read": (0.0, 0.05), "windows": (0.05, 0.9), "export": (0.9, 1.0)}
"""Where each engine stage sits in a job's overall progress fraction (0..1)."""


class ErrorCode(StrEnum):
    """Error codes a job records besides the ``code`` of each ``RcmSegError`` subclass."""

    CANCELED = "canceled"
    JOB_TIMEOUT = "job_timeout"
    INTERNAL = "internal_error"
    WORKER_LOST = "worker_lost"
    MOSAIC_GONE = "mosaic_gone"
    """The mosaic was deleted before the job could read it."""
    RESULT_EXPIRED = "result_expired"


WORKER_TTL_MIN_S: Final = 20


def worker_ttl_s(heartbeat_s: int) -> int:
    """How long a worker's registration lives without a heartbeat. An idle worker heartbeats every
    ``ttl - 15`` s (RQ's dequeue timeout) and a busy one several times per ``heartbeat_s``, so a worker
    silent for longer is dead: the API counts only the others as live."""
    return max(WORKER_TTL_MIN_S, heartbeat_s)


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

    source: str
    model: str
    params: dict[str, Any]
    parts_dir: str
    """The folder, relative to the data folder, where every band writes ``band-<i>.npz`` and ``.json``."""
    band: int
    bands: int
    cancel_key: str
    """The job's cancel key, shared by every part of it."""


class MergeJobKwargs(TypedDict):
    """The keyword arguments of ``MERGE_FUNCTION``."""

    source: str
    out_dir: str
    model: str
    params: dict[str, Any]
    parts_dir: str
    bands: int
    cancel_key: str
    source_name: NotRequired[str]


def band_job_id(job_id: str, band: int) -> str:
    """The RQ id of band ``band`` of job ``job_id``."""
    return f"{job_id}-band-{band}"


def parts_relpath(result_relpath: str) -> str:
    """Where the bands of the job writing ``result_relpath`` keep their sums: a hidden folder beside it."""
    head, _, name = result_relpath.rstrip("/").rpartition("/")
    return f"{head}/.{name}.parts" if head else f".{name}.parts"
