"""The data folder: uploaded mosaics, results, partial uploads, and their retention.

Layout (``RCMSEG_DATA_DIR``, shared by the API and every worker)::

    tmp/upload-*.part                    uploads being received (deleted when rejected or stored)
    uploads/<owner>/<mosaic_id>/         one accepted mosaic: source.<ext> + mosaic.json, and pyramid/ (its
                                         Deep Zoom pyramid, built once by a prepare job, renamed into place)
    results/<owner>/<result_key>/        one finished result, written by the engine (see docs/service.md)
    results/<owner>/.<result_key>.tmp-*  a result being written (the engine renames it when complete)
    scratch/                             the engine's working files while a job runs
    redis/                               the private Redis of ``rcmseg serve`` (embedded default only)

Everything an owner has lives under a folder named after the owner, so one owner's data can never be
reached through another owner's identifiers. Folders appear by rename only, never half-written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from app.datafiles import PARTIAL_NAME, age, alive, children, host_tag, remove, subdirs
from worker.contract import MOSAIC_LAYER, MOSAIC_PYRAMID, SUMMARY_FILE
from worker.io.mosaic import MosaicHeader

log = logging.getLogger(__name__)

ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
SOURCE_EXT = {"tiff": ".tif", "png": ".png", "jpeg": ".jpg", "bmp": ".bmp", "dicom": ".dcm"}
MOSAIC_RECORD = "mosaic.json"
SUMMARY = SUMMARY_FILE
SIGNATURES = {
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
    b"II+\x00": "tiff",
    b"MM\x00+": "tiff",
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"BM": "bmp",
}
PARTIAL_UPLOAD_MAX_AGE_S = 3600


@dataclass(frozen=True, kw_only=True)
class MosaicRecord(MosaicHeader):
    """An accepted mosaic as stored in ``mosaic.json``: its header and where and when it came from."""

    id: str
    sha256: str
    size_bytes: int
    filename: str
    created_at: str
    """When it was first uploaded, ISO 8601 in UTC (records written before say Unix seconds; read as such)."""
    source: str


@dataclass(frozen=True)
class SweepReport:
    """What one retention sweep deleted."""

    uploads: int = 0
    results: int = 0
    partial: int = 0


def sniff_format(path: Path) -> str | None:
    """The image format the first bytes announce, or ``None`` when they announce no supported one."""
    with path.open("rb") as fh:
        head = fh.read(132)
    for magic, fmt in SIGNATURES.items():
        if head.startswith(magic):
            return fmt
    return "dicom" if head[128:132] == b"DICM" else None  # DICOM Part 10: a 128-byte preamble, then DICM


def mosaic_id_for(owner: str, sha256: str) -> str:
    """Identical bytes from one owner are one mosaic; the same bytes from another owner are another."""
    return hashlib.sha256(f"{owner}\n{sha256}".encode()).hexdigest()[:32]


class Storage:
    """Paths and records under the data folder."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir).resolve()
        self.tmp = self.root / "tmp"
        self.uploads = self.root / "uploads"
        self.results = self.root / "results"
        self.scratch = self.root / "scratch"

    def free_bytes(self) -> int:
        """Bytes free to this process on the data folder's file system."""
        return shutil.disk_usage(self.root).free

    def ensure(self) -> None:
        for folder in (self.tmp, self.uploads, self.results, self.scratch):
            folder.mkdir(parents=True, exist_ok=True)

    # -- uploads -------------------------------------------------------------------------------------

    def new_partial(self) -> Path:
        """A fresh, empty file for an incoming upload, named after this host and process (so that the
        partial uploads of a process that died can be told from those still arriving)."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        prefix = f"upload-{host_tag()}-{os.getpid()}-"
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=".part", dir=self.tmp)
        os.close(fd)
        return Path(name)

    def sweep_dead_partials(self) -> int:
        """Delete the partial uploads of processes of this host that no longer run (an API that was
        killed mid-upload); returns how many. Other hosts' partials wait for the hourly sweep."""
        removed = 0
        for entry in children(self.tmp):
            match = PARTIAL_NAME.match(entry.name)
            if match and match["host"] == host_tag() and not alive(int(match["pid"])):
                removed += remove(entry)
        return removed

    def mosaic_dir(self, owner: str, mosaic_id: str) -> Path | None:
        """The folder of an owner's mosaic, or ``None`` for ids that are malformed or not theirs."""
        if not ID_PATTERN.match(mosaic_id):
            return None
        folder = self.uploads / owner / mosaic_id
        return folder if (folder / MOSAIC_RECORD).is_file() else None

    def get_mosaic(self, owner: str, mosaic_id: str) -> MosaicRecord | None:
        folder = self.mosaic_dir(owner, mosaic_id)
        if folder is None:
            return None
        data = json.loads((folder / MOSAIC_RECORD).read_text(encoding="utf-8"))
        if isinstance(data.get("created_at"), int | float):  # a record written before times were ISO 8601
            data["created_at"] = datetime.fromtimestamp(data["created_at"], tz=UTC).isoformat()
        return MosaicRecord(**data)

    def list_mosaics(self, owner: str) -> list[MosaicRecord]:
        folder = self.uploads / owner
        if not folder.is_dir():
            return []
        found = [self.get_mosaic(owner, sub.name) for sub in folder.iterdir()]
        return sorted((m for m in found if m is not None), key=lambda m: m.created_at)

    def store_mosaic(
        self, owner: str, partial: Path, *, sha256: str, header: MosaicHeader, filename: str
    ) -> tuple[MosaicRecord, bool]:
        """Move a validated upload into place; returns the record and whether it is new.

        The mosaic folder is built beside its final name and renamed, so a reader sees all of it or none.
        The same bytes stored twice by one owner keep the first record (and refresh its age).
        """
        mosaic_id = mosaic_id_for(owner, sha256)
        final = self.uploads / owner / mosaic_id
        existing = self.get_mosaic(owner, mosaic_id)
        if existing is not None:
            partial.unlink(missing_ok=True)
            self.touch_mosaic(owner, mosaic_id)
            return existing, False
        final.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{mosaic_id}.tmp-", dir=final.parent))
        source = f"source{SOURCE_EXT.get(header.format, '.bin')}"
        record = MosaicRecord(
            **asdict(header),
            id=mosaic_id,
            sha256=sha256,
            size_bytes=partial.stat().st_size,
            filename=filename,
            created_at=datetime.now(UTC).isoformat(),
            source=source,
        )
        try:
            os.replace(partial, building / source)
            (building / MOSAIC_RECORD).write_text(json.dumps(asdict(record), indent=2), encoding="utf-8")
            try:
                os.rename(building, final)
            except OSError:
                if self.get_mosaic(owner, mosaic_id) is None:
                    raise
                # Another request stored the same bytes first: keep theirs.
                shutil.rmtree(building, ignore_errors=True)
                return self.get_mosaic(owner, mosaic_id), False  # type: ignore[return-value]
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            partial.unlink(missing_ok=True)
            raise
        log.info("stored mosaic", extra={"owner": owner, "mosaic_id": mosaic_id, "bytes": record.size_bytes})
        return record, True

    def touch_mosaic(self, owner: str, mosaic_id: str) -> None:
        """Restart a mosaic's retention clock (it was uploaded again or used by a job)."""
        folder = self.mosaic_dir(owner, mosaic_id)
        if folder is not None:
            os.utime(folder / MOSAIC_RECORD)

    def delete_mosaic(self, owner: str, mosaic_id: str) -> bool:
        folder = self.mosaic_dir(owner, mosaic_id)
        if folder is None:
            return False
        # Rename first so the folder vanishes at once even if deleting its files takes a while.
        doomed = folder.with_name(f".{folder.name}.deleted-{os.getpid()}-{time.monotonic_ns()}")
        os.rename(folder, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        return True

    def source_relpath(self, owner: str, record: MosaicRecord) -> str:
        """The mosaic file relative to the data folder (workers may mount it elsewhere)."""
        return f"uploads/{owner}/{record.id}/{record.source}"

    def pyramid_relpath(self, owner: str, mosaic_id: str) -> str:
        """The mosaic's Deep Zoom pyramid folder relative to the data folder (deleted with the mosaic)."""
        return f"uploads/{owner}/{mosaic_id}/{MOSAIC_PYRAMID}"

    def pyramid_dir(self, owner: str, mosaic_id: str) -> Path | None:
        """The complete pyramid folder of an owner's mosaic, or ``None`` while it is not (yet) built."""
        folder = self.mosaic_dir(owner, mosaic_id)
        if folder is None or not (folder / MOSAIC_PYRAMID / f"{MOSAIC_LAYER}.dzi").is_file():
            return None
        return folder / MOSAIC_PYRAMID

    # -- results -------------------------------------------------------------------------------------

    def result_relpath(self, owner: str, result_key: str) -> str:
        return f"results/{owner}/{result_key}"

    def result_dir(self, owner: str, result_key: str) -> Path | None:
        """A complete result folder, or ``None`` while it is missing (not yet written, or expired)."""
        if not ID_PATTERN.match(result_key):
            return None
        folder = self.results / owner / result_key
        return folder if (folder / SUMMARY).is_file() else None

    def read_summary(self, owner: str, result_key: str) -> dict[str, object] | None:
        folder = self.result_dir(owner, result_key)
        if folder is None:
            return None
        try:
            data = json.loads((folder / SUMMARY).read_text(encoding="utf-8"))
        except FileNotFoundError:  # expired between the check and the read
            return None
        return data if isinstance(data, dict) else None

    def touch_result(self, owner: str, result_key: str) -> None:
        folder = self.result_dir(owner, result_key)
        if folder is not None:
            os.utime(folder)

    # -- retention -----------------------------------------------------------------------------------

    def sweep(self, *, max_age_s: float, stale_work_s: float, now: float | None = None) -> SweepReport:
        """Delete uploads and results unused for ``max_age_s``, and work folders left by dead processes.

        A work folder (a result being written, a scratch folder) is stale only after ``stale_work_s``,
        which must exceed the job timeout: a live job never owns one for longer.
        """
        now = time.time() if now is None else now
        uploads = results = partial = 0
        for owner_dir in subdirs(self.uploads):
            for entry in subdirs(owner_dir):
                if entry.name.startswith("."):
                    if age(entry, now) > PARTIAL_UPLOAD_MAX_AGE_S:
                        partial += remove(entry)
                elif age(entry / MOSAIC_RECORD, now) > max_age_s:
                    uploads += remove(entry)
        for owner_dir in subdirs(self.results):
            for entry in subdirs(owner_dir):
                if entry.name.startswith("."):
                    if age(entry, now) > stale_work_s:
                        partial += remove(entry)
                elif age(entry, now) > max_age_s:
                    results += remove(entry)
        for entry in children(self.tmp):
            if age(entry, now) > PARTIAL_UPLOAD_MAX_AGE_S:
                partial += remove(entry)
        for entry in children(self.scratch):
            if age(entry, now) > stale_work_s:
                partial += remove(entry)
        report = SweepReport(uploads=uploads, results=results, partial=partial)
        if uploads or results or partial:
            log.info("retention sweep", extra=asdict(report))
        return report
