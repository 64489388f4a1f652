"""A PACS over DICOMweb (dicomweb-client): find a study's mosaic series (QIDO-RS), fetch it (WADO-RS), and
store results back (STOW-RS) once: an instance the PACS already holds, by SOP Instance UID, is not sent
again. A PACS that cannot be reached or answers an error is a ``PacsError`` naming the URL and the answer.
Imports no torch."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from retrying import RetryError

from models.errors import RcmSegError
from worker.io.dicom.dicomize import save_atomically
from worker.io.dicom.read import READ_SOP_CLASSES, valid_uid

log = logging.getLogger(__name__)

SOP_CLASS_TAG = "00080016"
SERIES_TAG = "0020000E"
SOP_INSTANCE_TAG = "00080018"
TIMEOUT_S = 60.0
RETRIES = 3
"""Attempts at a request answered 408, 429, 503 or 504 (a PACS that is busy), 0.2 s, 0.4 s ... apart."""

T = TypeVar("T")


class PacsError(RcmSegError, ConnectionError):
    """The PACS could not be reached, or answered a DICOMweb request with an error."""

    code = "pacs_error"


def _value(item: dict[str, dict], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


@dataclass
class StoreReport:
    """What a store did: instances sent, and instances the PACS held already."""

    stored: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


class Pacs:
    """One PACS's DICOMweb root (e.g. ``http://host:8042/dicom-web``)."""

    def __init__(self, url: str, *, timeout_s: float = TIMEOUT_S) -> None:
        self.url = url.rstrip("/")
        self._client = DICOMwebClient(self.url, timeout=timeout_s)
        self._client.set_http_retry_params(max_attempts=RETRIES, wait_exponential_multiplier=100)

    @contextmanager
    def _answer(self, what: str) -> Iterator[None]:
        """DICOMweb failures as ``PacsError``: which request, which PACS, what it said."""
        try:
            yield
        except RetryError as exc:  # still busy after the retries: the last answer says how
            response = exc.last_attempt.value
            status = f"{response.status_code} {response.reason}" if response is not None else "no answer"
            raise PacsError(f"the PACS at {self.url} answered {status} to {what}") from None
        except requests.exceptions.HTTPError as exc:
            response = exc.response
            status = f"{response.status_code} {response.reason}" if response is not None else str(exc)
            raise PacsError(f"the PACS at {self.url} answered {status} to {what}") from None
        except requests.exceptions.RequestException as exc:
            raise PacsError(
                f"cannot reach the PACS at {self.url} ({type(exc).__name__}) for {what}"
            ) from None

    def _call(self, what: str, call: Callable[[], T]) -> T:
        with self._answer(what):
            return call()

    def mosaic_series(self, study: str) -> str:
        """The study's first series holding a confocal or slide microscopy image."""
        found = self._call(
            f"searching the instances of study {study}",
            lambda: self._client.search_for_instances(study, fields=[SOP_CLASS_TAG, SERIES_TAG]),
        )
        for item in found:
            if _value(item, SOP_CLASS_TAG) in READ_SOP_CLASSES:
                return _value(item, SERIES_TAG)
        raise PacsError(
            f"study {study} on {self.url} holds no Confocal Microscopy or VL Whole Slide Microscopy image"
        )

    def fetch_series(self, study: str, series: str, folder: Path) -> list[Path]:
        """Every instance of a series written into ``folder`` as ``<SOP Instance UID>.dcm``."""
        written = []
        with self._answer(f"retrieving series {series} of study {study}"):
            for ds in self._client.iter_series(study, series):
                uid = str(ds.get("SOPInstanceUID", ""))
                if not valid_uid(uid):  # the file's name: never a path the PACS chose
                    raise PacsError(f"series {series} of study {study} on {self.url} holds an invalid UID")
                path = folder / f"{uid}.dcm"
                save_atomically(ds, path)
                written.append(path)
        if not written:
            raise PacsError(f"series {series} of study {study} on {self.url} holds no instance")
        log.info("fetched %d instance(s) of series %s", len(written), series)
        return written

    def holds(self, study: str, series: str, instance: str) -> bool:
        found = self._call(
            f"searching for instance {instance}",
            lambda: self._client.search_for_instances(
                study, series, search_filters={"SOPInstanceUID": instance}, fields=[SOP_INSTANCE_TAG]
            ),
        )
        return any(_value(item, SOP_INSTANCE_TAG) == instance for item in found)

    def store_once(self, paths: list[Path]) -> StoreReport:
        """Store each file the PACS does not hold yet (by SOP Instance UID)."""
        report = StoreReport()
        for path in paths:
            ds = pydicom.dcmread(path)
            uid, study = str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)
            if self.holds(study, str(ds.SeriesInstanceUID), uid):
                report.present.append(uid)
                continue
            with self._answer(f"storing {path.name}"):
                self._client.store_instances([ds], study)
            if not self.holds(study, str(ds.SeriesInstanceUID), uid):
                raise PacsError(f"the PACS at {self.url} accepted {path.name} but does not list it")
            report.stored.append(uid)
        return report
