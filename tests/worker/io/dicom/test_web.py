"""The PACS client against a real Orthanc with its DICOMweb plugin, and against servers that are down or
answer errors: each failure is a ``PacsError`` naming the PACS and the answer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest

from tests.conftest import free_port
from tests.worker.io.dicom.objects import phantom_pixels, save, wsm
from tests.worker.io.dicom.orthanc import Orthanc, running_orthanc
from worker.io.dicom.web import Pacs, PacsError


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as pacs:
        yield pacs


def test_fetch_and_store_once(orthanc: Orthanc, tmp_path: Path) -> None:
    image = save(wsm(phantom_pixels(), key="web"), tmp_path / "image.dcm")
    ds = pydicom.dcmread(image)
    pacs = Pacs(orthanc.dicomweb)
    assert pacs.store_once([image]).stored == [ds.SOPInstanceUID]
    again = pacs.store_once([image])
    assert (again.stored, again.present) == ([], [ds.SOPInstanceUID])
    assert pacs.mosaic_series(ds.StudyInstanceUID) == ds.SeriesInstanceUID
    fetched = pacs.fetch_series(ds.StudyInstanceUID, ds.SeriesInstanceUID, tmp_path / "fetched")
    assert [p.name for p in fetched] == [f"{ds.SOPInstanceUID}.dcm"]
    assert pydicom.dcmread(fetched[0]).PixelData == ds.PixelData


def test_a_study_without_a_mosaic_and_an_unknown_series_are_clear_errors(
    orthanc: Orthanc, tmp_path: Path
) -> None:
    pacs = Pacs(orthanc.dicomweb)
    with pytest.raises(PacsError, match="holds no Confocal Microscopy or VL Whole Slide Microscopy image"):
        pacs.mosaic_series("1.2.3.4.5")
    with pytest.raises(PacsError, match=r"answered 404 .* retrieving series 1\.2\.3\.9"):
        pacs.fetch_series("1.2.3.4.5", "1.2.3.9", tmp_path)


def test_a_pacs_that_is_down_is_named() -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    with pytest.raises(PacsError, match=f"cannot reach the PACS at {url}"):
        Pacs(url, timeout_s=5).mosaic_series("1.2.3")


class _Failing(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503, "Service Unavailable")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_pacs_answering_5xx_is_named() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/dicom-web"
        with pytest.raises(PacsError, match="answered 503 Service Unavailable to searching the instances"):
            Pacs(url, timeout_s=10).mosaic_series("1.2.3")
    finally:
        server.shutdown()
        server.server_close()
