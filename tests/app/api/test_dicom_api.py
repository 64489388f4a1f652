"""DICOM through the service over real HTTP: a DICOM mosaic is uploaded and segmented, its two DICOM
Segmentations are served; a job on another format answers 404 for them; a DICOM object that is not a mosaic
is refused naming its SOP class, and nothing of it stays; ``rcmseg dicomweb --server`` segments a PACS series
on the service and stores the result in the PACS."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image

from app.cli import main
from tests.app.conftest import TOKENS, Service, running_service, texture_png, upload_id, wait_for
from tests.worker.io.dicom.objects import ct_image, dciodvfy_errors, save, wsm
from tests.worker.io.dicom.orthanc import Orthanc, running_orthanc
from worker.io.dicom.web import Pacs

pytestmark = pytest.mark.slow

JOB_TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def service(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(service_env, tmp_path_factory.mktemp("logs"), workers=1) as svc:
        yield svc


@pytest.fixture(scope="module")
def alice(service: Service) -> Iterator[httpx.Client]:
    with service.client("alice") as client:
        yield client


@pytest.fixture(scope="module")
def mosaic_dcm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2 um/px VL Whole Slide Microscopy image of noise (the tiny model reads 2 um/px)."""
    folder = tmp_path_factory.mktemp("dicom")
    png = texture_png(folder / "t.png", 160, seed=4)
    pixels = np.asarray(Image.open(png))
    ds = wsm(pixels, key="api")
    spacing = ["0.002", "0.002"]
    ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = spacing
    return save(ds, folder / "mosaic.dcm")


def _finished(client: httpx.Client, mosaic_id: str) -> str:
    response = client.post("/v1/jobs", json={"mosaic_id": mosaic_id, "step": 48})
    assert response.status_code in (200, 201, 202), response.text
    job_id = str(response.json()["id"])

    def done() -> bool:
        status = client.get(f"/v1/jobs/{job_id}").json()["status"]
        assert status not in ("failed", "canceled"), client.get(f"/v1/jobs/{job_id}").text
        return bool(status == "finished")

    wait_for(done, timeout=JOB_TIMEOUT_S, what=f"job {job_id} to finish")
    return job_id


def test_a_dicom_mosaic_gets_its_segmentations(alice: httpx.Client, mosaic_dcm: Path, tmp_path: Path) -> None:
    mosaic = alice.post("/v1/mosaics", files={"file": ("m.dcm", mosaic_dcm.read_bytes())})
    assert mosaic.status_code == 201, mosaic.text
    assert mosaic.json()["format"] == "dicom"
    job_id = _finished(alice, mosaic.json()["id"])
    source = pydicom.dcmread(mosaic_dcm, stop_before_pixels=True)
    for name in ("segmentation.dcm", "probability.dcm"):
        response = alice.get(f"/v1/jobs/{job_id}/{name}")
        assert response.status_code == 200 and response.headers["content-type"] == "application/dicom"
        path = tmp_path / name
        path.write_bytes(response.content)
        seg = pydicom.dcmread(path)
        assert seg.StudyInstanceUID == source.StudyInstanceUID and dciodvfy_errors(path) == []
    summary = alice.get(f"/v1/jobs/{job_id}/files/summary.json").json()
    assert (summary["input"]["pixel_size_um"], summary["input"]["pixel_size_source"]) == (2.0, "file")
    assert alice.get(f"/v1/jobs/{job_id}/files/heatmap.ome.tif").status_code == 200


def test_a_job_on_another_format_has_no_dicom_result(alice: httpx.Client, tmp_path: Path) -> None:
    png = texture_png(tmp_path / "t.png", 96, seed=5)
    job_id = _finished(alice, upload_id(alice, png))
    response = alice.get(f"/v1/jobs/{job_id}/segmentation.dcm")
    assert response.status_code == 404 and "not DICOM" in response.json()["message"]


def test_a_dicom_object_that_is_not_a_mosaic_is_refused_and_not_kept(
    alice: httpx.Client, service: Service, tmp_path: Path
) -> None:
    ct = save(ct_image(), tmp_path / "ct.dcm")
    response = alice.post("/v1/mosaics", files={"file": ("scan.dcm", ct.read_bytes())})
    body = response.json()
    assert response.status_code == 415, body
    assert "CT Image Storage" in body["message"] and "1.2.840.10008.5.1.4.1.1.2" in body["message"]
    assert str(tmp_path) not in body["message"] and "scan.dcm" in body["message"]
    data = Path(service.env["RCMSEG_DATA_DIR"])
    assert not list((data / "tmp").iterdir())
    listed = alice.get("/v1/mosaics").json()["mosaics"]
    assert all(m["filename"] != "scan.dcm" for m in listed)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as pacs:
        yield pacs


def test_dicomweb_through_the_service(
    service: Service, orthanc: Orthanc, mosaic_dcm: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = pydicom.dcmread(mosaic_dcm, stop_before_pixels=True)
    Pacs(orthanc.dicomweb).store_once([mosaic_dcm])
    token = tmp_path / "token"
    token.write_text(TOKENS["alice"])
    args = ["dicomweb", "--url", orthanc.dicomweb, "--study", str(source.StudyInstanceUID)]
    args += ["--server", service.url, "--token-file", str(token), "--step", "48"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(out["stored"]) == 2 and out["series"] == source.SeriesInstanceUID
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["stored"] == [] and sorted(again["already_stored"]) == sorted(out["stored"])
