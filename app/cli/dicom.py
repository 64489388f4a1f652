"""``rcmseg dicomize`` (any mosaic as a VL Whole Slide Microscopy image) and ``rcmseg dicomweb`` (a series of
a PACS segmented, its Segmentations stored back): argument parsing only; the work is in
:mod:`worker.io.dicom`."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from app.cli.options import add_device_options, add_model_option, add_step_and_sigma, positive_int

log = logging.getLogger("rcmseg.dicom")

MAX_PIXELS = 2 * 12000 * 12000


def register(sub: Any) -> None:
    _register_dicomize(sub)
    _register_dicomweb(sub)


def _register_dicomize(sub: Any) -> None:
    p = sub.add_parser(
        "dicomize",
        help="write a mosaic as a DICOM VL Whole Slide Microscopy image",
        description="Write any mosaic rcmseg reads (TIFF, PNG, JPEG, BMP, a VivaBlock folder, DICOM) as an "
        "8-bit grey DICOM VL Whole Slide Microscopy image with its pixel size, tiled 256 x 256, so that "
        "its result can be a DICOM Segmentation that references it. Patient and study fields are empty "
        "(anonymous) unless given; every UID is derived from the mosaic's bytes and those fields.",
    )
    p.add_argument("input", type=Path, metavar="MOSAIC", help="the mosaic file or folder")
    p.add_argument("--out", type=Path, required=True, metavar="FILE.dcm", help="the DICOM file to write")
    p.add_argument(
        "--pixel-size-um",
        type=float,
        default=None,
        help="um per pixel (default: what the file records; required when it records none)",
    )
    p.add_argument("--patient-name", default="", help="Patient's Name, as Family^Given (default empty)")
    p.add_argument("--patient-id", default="", help="Patient ID (default empty)")
    p.add_argument("--study-uid", default="", help="Study Instance UID (default: derived from the mosaic)")
    p.add_argument("--accession", default="", help="Accession Number (default empty)")
    p.add_argument("--study-id", default="", help="Study ID (default empty)")
    p.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, help="refuse larger mosaics")
    p.add_argument("--grid-cols", type=positive_int, default=None, help="VivaBlock: tiles per row")
    p.add_argument("--serpentine", action="store_true", help="VivaBlock: every other row runs right to left")
    p.set_defaults(func=run_dicomize)


def study_fields(args: argparse.Namespace) -> Any:
    from worker.io.dicom.dicomize import StudyFields

    return StudyFields(
        patient_name=args.patient_name,
        patient_id=args.patient_id,
        study_uid=args.study_uid,
        accession_number=args.accession,
        study_id=args.study_id,
    )


def run_dicomize(args: argparse.Namespace) -> int:
    from models.errors import InvalidParameter
    from worker.io.dicom.dicomize import dicomize
    from worker.io.mosaic import VivaBlockLayout

    if args.pixel_size_um is not None and not args.pixel_size_um > 0:
        raise InvalidParameter(f"--pixel-size-um must be > 0, got {args.pixel_size_um}")
    ds = dicomize(
        args.input,
        args.out,
        fields=study_fields(args),
        max_pixels=args.max_pixels,
        pixel_size_um=args.pixel_size_um,
        layout=VivaBlockLayout(cols=args.grid_cols, serpentine=args.serpentine),
    )
    print(
        json.dumps(
            {
                "out": str(args.out),
                "study_uid": str(ds.StudyInstanceUID),
                "series_uid": str(ds.SeriesInstanceUID),
                "sop_instance_uid": str(ds.SOPInstanceUID),
            }
        )
    )
    return 0


def _register_dicomweb(sub: Any) -> None:
    p = sub.add_parser(
        "dicomweb",
        help="segment a series of a PACS over DICOMweb and store the Segmentations back",
        description="Fetch a series over WADO-RS (the study's first confocal or slide microscopy series "
        "unless --series names one), segment it here (or on a running rcmseg service with --server), "
        "and store its two DICOM Segmentations (binary mask, probability) back with STOW-RS. The "
        "Segmentations' UIDs derive from the result, so a second run stores nothing new.",
    )
    p.add_argument("--url", required=True, help="the DICOMweb root of the PACS (e.g. http://pacs/dicom-web)")
    p.add_argument("--study", required=True, metavar="UID", help="Study Instance UID")
    p.add_argument("--series", default=None, metavar="UID", help="Series Instance UID (default: found)")
    p.add_argument(
        "--server", default=None, metavar="URL", help="segment on this rcmseg service instead of here"
    )
    p.add_argument("--token-file", type=Path, default=None, help="the service's token (with --server)")
    p.add_argument("--work", type=Path, default=None, help="keep the series and the result in this folder")
    add_model_option(p)
    add_step_and_sigma(p)
    add_device_options(p)
    p.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS, help="refuse larger mosaics")
    p.set_defaults(func=run_dicomweb)


def _segment_here(args: argparse.Namespace, source: Path, out: Path) -> None:
    """The series segmented by this process, as ``rcmseg segment`` would."""
    from worker.engine.device import RunOptions, default_precision, prepare_process, resolve_device
    from worker.engine.pipeline import segment_mosaic
    from worker.io.checkpoint import load_model
    from worker.io.zoo import read_card, resolve_model
    from worker.params import MethodParams

    device = resolve_device(args.device)
    folder = resolve_model(args.model)
    given = MethodParams.parse({**vars(args), "precision": args.precision or default_precision(device)})
    params = given.resolve(read_card(folder).method_defaults())
    prepare_process(device)
    model = load_model(folder, device)
    options = RunOptions(device=args.device, batch_size=args.batch_size, max_pixels=args.max_pixels)
    segment_mosaic(source, model, out, params=params, options=options, overwrite=True)


def _segment_on_service(args: argparse.Namespace, source: Path, out: Path) -> None:
    """The series' base level uploaded to a running service, segmented there, its Segmentations fetched."""
    import httpx

    from app.cli.submit import read_token
    from app.client import RcmsegClient, ServiceError
    from models.errors import InvalidParameter
    from worker.contract import DICOM_RESULT_FILES
    from worker.io.dicom.read import base_level

    if args.token_file is None:
        raise InvalidParameter("--server needs --token-file (the service's bearer token)")
    token = read_token(args.token_file)
    with RcmsegClient(args.server, token) as client:
        mosaic = client.upload_mosaic(base_level(source))
        job = client.submit_job(mosaic.id, model=args.model, step=args.step, sigma=args.sigma)
        job = client.wait_for_job(job.id)
        if job.status != "finished":
            message = job.error.message if job.error else job.status
            raise ServiceError("job_failed", f"job {job.id} on {args.server}: {message}", None)
    out.mkdir(parents=True, exist_ok=True)
    headers = {"Authorization": f"Bearer {token}"}
    for name in DICOM_RESULT_FILES:
        url = f"{args.server.rstrip('/')}/v1/jobs/{job.id}/{name}"
        try:
            response = httpx.get(url, headers=headers, timeout=120)
        except httpx.TransportError as exc:
            raise ServiceError("unreachable", f"cannot reach {args.server}: {exc}", None) from None
        if response.is_error:
            raise ServiceError("download_failed", f"{url}: {response.status_code} {response.text}", None)
        (out / name).write_bytes(response.content)


def run_dicomweb(args: argparse.Namespace) -> int:
    import tempfile

    from worker.contract import DICOM_RESULT_FILES
    from worker.io.dicom.web import Pacs

    if not args.verbose:  # dicomweb-client and httpx log every request at INFO
        for name in ("dicomweb_client", "httpx"):
            logging.getLogger(name).setLevel(logging.WARNING)
    pacs = Pacs(args.url)
    series = args.series or pacs.mosaic_series(args.study)
    with tempfile.TemporaryDirectory(prefix="rcmseg-dicomweb-") as scratch:
        work = args.work or Path(scratch)
        source, result = work / "series", work / "result"
        source.mkdir(parents=True, exist_ok=True)
        pacs.fetch_series(args.study, series, source)
        if args.server:
            _segment_on_service(args, source, result)
        else:
            _segment_here(args, source, result)
        report = pacs.store_once([result / name for name in DICOM_RESULT_FILES])
    print(
        json.dumps(
            {"study": args.study, "series": series, "stored": report.stored, "already_stored": report.present}
        )
    )
    return 0
