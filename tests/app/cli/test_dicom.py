"""``rcmseg dicomize`` and ``rcmseg segment`` on DICOM as a user runs them: a dicomized phantom is a valid VL
Whole Slide Microscopy image, segments to the heatmap of the TIFF it was made from, and gets two valid DICOM
Segmentations that reference it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import pyvips
from dicomweb_client.api import DICOMwebClient

from app.cli import main
from app.client import find_inputs
from tests.conftest import free_port
from tests.worker.io.dicom.objects import dciodvfy_errors, phantom_pixels, save, wsm
from tests.worker.io.dicom.orthanc import Orthanc, running_orthanc
from worker.datasets.phantom_files import write_image
from worker.io.dicom.web import Pacs

PIXEL_UM = 0.5


@pytest.fixture(scope="module")
def phantom_tif(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 8-bit grey mosaic recording 0.5 um/px, smooth enough that a network's windows differ."""
    rng = np.random.default_rng(7)
    small = rng.random((24, 30))
    image = pyvips.Image.new_from_array(small).resize(20, kernel="linear")
    pixels = np.clip(np.asarray(image.numpy()) * 255, 0, 255).astype(np.uint8)[:470, :590]
    path = tmp_path_factory.mktemp("phantom") / "phantom.tif"
    write_image(path, pixels, pixel_size_um=PIXEL_UM)
    return path


@pytest.fixture(scope="module")
def phantom_dcm(phantom_tif: Path) -> Path:
    out = phantom_tif.with_suffix(".dcm")
    assert main(["dicomize", str(phantom_tif), "--out", str(out)]) == 0
    return out


def _segment(source: Path, out: Path, model: Path) -> None:
    args = ["segment", str(source), "--model", str(model), "--out", str(out), "--step", "32", "--sigma", "16"]
    assert main([*args, "--device", "cpu"]) == 0


def test_dicomize_writes_a_valid_slide_image_with_the_pixel_size(
    phantom_tif: Path, phantom_dcm: Path
) -> None:
    assert dciodvfy_errors(phantom_dcm) == []
    ds = pydicom.dcmread(phantom_dcm)
    spacing = ds.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing
    assert [float(v) for v in spacing] == [PIXEL_UM / 1000] * 2
    assert (ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows) == (590, 470)
    assert ds.PatientName == "" and ds.PatientID == ""  # anonymous by default


def test_dicomize_takes_patient_study_and_accession(phantom_tif: Path, tmp_path: Path) -> None:
    out = tmp_path / "named.dcm"
    study = "1.2.826.0.1.3680043.10.1234.1"
    args = ["dicomize", str(phantom_tif), "--out", str(out), "--patient-id", "P-7", "--patient-name", "Doe^J"]
    assert main([*args, "--study-uid", study, "--accession", "ACC-1"]) == 0
    ds = pydicom.dcmread(out, stop_before_pixels=True)
    assert (ds.PatientID, str(ds.PatientName), ds.StudyInstanceUID, ds.AccessionNumber) == (
        "P-7",
        "Doe^J",
        study,
        "ACC-1",
    )
    assert dciodvfy_errors(out) == []


def test_dicomize_refuses_a_study_uid_that_is_not_one(
    phantom_tif: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.dcm"
    assert main(["dicomize", str(phantom_tif), "--out", str(out), "--study-uid", "1.02.abc"]) == 2
    assert "'1.02.abc' is not a DICOM UID" in capsys.readouterr().err and not out.exists()


def test_dicomize_refuses_a_mosaic_without_pixel_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "plain.png"
    pyvips.Image.black(40, 30).cast("uchar").pngsave(str(path))
    assert main(["dicomize", str(path), "--out", str(tmp_path / "x.dcm")]) == 2
    assert "--pixel-size-um" in capsys.readouterr().err
    assert not (tmp_path / "x.dcm").exists()


def test_segment_on_dicom_equals_the_tiff_and_writes_valid_segmentations(
    tmp_path: Path, tiny_model_dir: Path, phantom_tif: Path, phantom_dcm: Path
) -> None:
    _segment(phantom_tif, tmp_path / "tif", tiny_model_dir)
    _segment(phantom_dcm, tmp_path / "dcm", tiny_model_dir)
    heats = [pyvips.Image.new_from_file(str(tmp_path / d / "heatmap.tif")).numpy() for d in ("tif", "dcm")]
    assert heats[0].shape == heats[1].shape and np.abs(heats[0] - heats[1]).max() <= 1e-6
    assert not (tmp_path / "tif" / "segmentation.dcm").exists()
    out = tmp_path / "dcm"
    mask = pyvips.Image.new_from_file(str(out / "mask.tif")).numpy() > 0
    source = pydicom.dcmread(phantom_dcm, stop_before_pixels=True)
    for name in ("segmentation.dcm", "probability.dcm"):
        assert dciodvfy_errors(out / name) == [], name
    seg = hd.seg.segread(out / "segmentation.dcm")
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    binary = seg.get_total_pixel_matrix(combine_segments=False)[..., 0]
    summary = json.loads((out / "summary.json").read_text())
    k = summary["processing"]["downsample"]
    assert summary["input"]["pixel_size_source"] == "file" and summary["input"]["format"] == "dicom"
    expected = np.zeros((470, 590), dtype=bool)
    h, w = mask.shape
    expected[: h * k, : w * k] = np.repeat(np.repeat(mask, k, axis=0), k, axis=1)
    assert np.array_equal(binary > 0, expected)
    assert set(summary["dicom"]["segmentations"]) == {"segmentation.dcm", "probability.dcm"}
    assert summary["layers"]["heatmap_ome"]["file"] == "heatmap.ome.tif"
    assert (out / "heatmap.ome.tif").is_file()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as pacs:
        yield pacs


def _source_grid(mask: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """What the binary segment must be: each processing pixel's value over its k x k source block."""
    expected = np.zeros(shape, dtype=bool)
    h, w = mask.shape
    expected[: h * k, : w * k] = np.repeat(np.repeat(mask > 0, k, axis=0), k, axis=1)
    return expected


def test_dicomweb_round_trip_through_orthanc(
    tmp_path: Path,
    tiny_model_dir: Path,
    phantom_dcm: Path,
    orthanc: Orthanc,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = pydicom.dcmread(phantom_dcm)
    study = str(source.StudyInstanceUID)
    assert Pacs(orthanc.dicomweb).store_once([phantom_dcm]).stored == [source.SOPInstanceUID]
    work = tmp_path / "work"
    args = ["dicomweb", "--url", orthanc.dicomweb, "--study", study, "--model", str(tiny_model_dir)]
    args += ["--step", "32", "--sigma", "16", "--device", "cpu", "--work", str(work)]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["series"] == source.SeriesInstanceUID and len(first["stored"]) == 2
    client = DICOMwebClient(orthanc.dicomweb)
    found = client.search_for_instances(study, search_filters={"Modality": "SEG"})
    segs = {
        item["00080018"]["Value"][0]: hd.seg.Segmentation.from_dataset(
            client.retrieve_instance(study, item["0020000E"]["Value"][0], item["00080018"]["Value"][0])
        )
        for item in found
    }
    assert set(segs) == set(first["stored"])
    binary = next(s for s in segs.values() if s.SegmentationType == "BINARY")
    assert binary.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    k = json.loads((work / "result" / "summary.json").read_text())["processing"]["downsample"]
    mask = pyvips.Image.new_from_file(str(work / "result" / "mask.tif")).numpy()
    segment = binary.get_total_pixel_matrix(combine_segments=False)[..., 0] > 0
    assert segment.any() and np.array_equal(segment, _source_grid(mask, k, (470, 590)))
    held = len(orthanc.instances())
    assert main(args) == 0  # a retry stores nothing twice
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (second["stored"], sorted(second["already_stored"])) == ([], sorted(first["stored"]))
    assert len(orthanc.instances()) == held == 3


def test_dicomweb_names_a_pacs_that_is_down(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    assert main(["dicomweb", "--url", url, "--study", "1.2.3"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"cannot reach the PACS at {url}" in err[0]


def test_submit_sends_a_series_folder_as_its_base_level(tmp_path: Path) -> None:
    pixels = phantom_pixels()
    series = tmp_path / "series"
    base = wsm(pixels)
    thumbnail = wsm(pixels[::4, ::4].copy(), key="thumb")
    thumbnail.SeriesInstanceUID = base.SeriesInstanceUID
    thumbnail.ImageType = ["DERIVED", "PRIMARY", "THUMBNAIL", "RESAMPLED"]
    save(thumbnail, series / "a.dcm")
    save(base, series / "b.dcm")
    assert find_inputs([series]) == [series / "b.dcm"]
    mosaics = tmp_path / "mosaics"  # a folder of separate DICOM mosaics: each is an input
    save(wsm(pixels, key="one"), mosaics / "one.dcm")
    save(wsm(pixels, key="two"), mosaics / "two.dcm")
    assert find_inputs([mosaics]) == [mosaics / "one.dcm", mosaics / "two.dcm"]
