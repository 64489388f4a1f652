"""Any mosaic rcmseg reads as a VL Whole Slide Microscopy Image: 8-bit grey (MONOCHROME2), tiled TILED_FULL,
with its pixel size, so that a TIFF or VivaBlock mosaic can get a DICOM Segmentation that references it.

Patient, study and accession come from the caller and are empty (anonymous) by default. Every UID is derived
from the mosaic's SHA-256 and those fields, so dicomizing the same mosaic twice gives the same object and a
PACS stores it once. Imports no torch.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

from models.errors import InvalidParameter
from worker.io.dicom.read import WSM_IMAGE, pixel_spacing, valid_uid
from worker.io.mosaic import VivaBlockLayout, input_sha256, open_mosaic
from worker.provenance import package_version

TILE = 256
"""Tile side of the frames (the size most slide viewers fetch)."""
MANUFACTURER = "rcmseg"
ILLUMINATION_REFLECTION = ("111742", "DCM", "Reflection illumination")
"""CID 8123: a reflectance confocal microscope images light reflected by the tissue."""
ILLUMINATION_COLOR = ("414298005", "SCT", "Full Spectrum")
"""CID 8122: the colour of the light is not known for a converted mosaic (an RCM laser is near infrared)."""


@dataclass(frozen=True, kw_only=True)
class StudyFields:
    """Who and which study a dicomized mosaic belongs to; empty fields stay empty (type 2 attributes)."""

    patient_name: str = ""
    patient_id: str = ""
    study_uid: str = ""
    """Empty: a UID derived from the mosaic and the other fields."""
    accession_number: str = ""
    study_id: str = ""
    series_description: str = "RCM mosaic"


def derived_uid(*parts: str) -> str:
    """A UID under 2.25 (a 128-bit decimal, as for a UUID) from a hash of ``parts``: the same parts give
    the same UID."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return f"2.25.{int(digest[:32], 16)}"


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _item(**attrs: object) -> Dataset:
    item = Dataset()
    for name, value in attrs.items():
        setattr(item, name, value)
    return item


def _tiles(pixels: np.ndarray, tile: int) -> bytes:
    """The frames of TILED_FULL in row-major order, edge tiles padded with black."""
    h, w = pixels.shape
    across, down = math.ceil(w / tile), math.ceil(h / tile)
    padded = np.zeros((down * tile, across * tile), dtype=np.uint8)
    padded[:h, :w] = pixels
    frames = padded.reshape(down, tile, across, tile).swapaxes(1, 2)
    return np.ascontiguousarray(frames).tobytes()


def _patient_study(ds: Dataset, fields: StudyFields, study_uid: str, when: dt.datetime) -> None:
    ds.PatientName = fields.patient_name
    ds.PatientID = fields.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = when.strftime("%Y%m%d")
    ds.StudyTime = when.strftime("%H%M%S")
    ds.ReferringPhysicianName = ""
    ds.StudyID = fields.study_id
    ds.AccessionNumber = fields.accession_number


def _equipment(ds: Dataset) -> None:
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "rcmseg dicomize"
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = package_version()


def _specimen(ds: Dataset, key: str) -> None:
    ds.ContainerIdentifier = key[:16]
    ds.IssuerOfTheContainerIdentifierSequence = Sequence()
    ds.ContainerTypeCodeSequence = Sequence()
    ds.SpecimenDescriptionSequence = Sequence(
        [
            _item(
                SpecimenIdentifier=key[:16],
                SpecimenUID=derived_uid("specimen", key),
                IssuerOfTheSpecimenIdentifierSequence=Sequence(),
                SpecimenPreparationSequence=Sequence(),
            )
        ]
    )


def _optical_path(ds: Dataset) -> None:
    ds.NumberOfOpticalPaths = 1
    ds.OpticalPathSequence = Sequence(
        [
            _item(
                OpticalPathIdentifier="1",
                IlluminationTypeCodeSequence=Sequence([_code(*ILLUMINATION_REFLECTION)]),
                IlluminationColorCodeSequence=Sequence([_code(*ILLUMINATION_COLOR)]),
            )
        ]
    )


def _geometry(ds: Dataset, width: int, height: int, pixel_size_um: float) -> None:
    mm = pixel_size_um / 1000.0
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = width, height
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.ImagedVolumeWidth = width * mm
    ds.ImagedVolumeHeight = height * mm
    ds.ImagedVolumeDepth = 0.001
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    ds.TotalPixelMatrixOriginSequence = Sequence(
        [_item(XOffsetInSlideCoordinateSystem=0.0, YOffsetInSlideCoordinateSystem=0.0)]
    )
    spacing = f"{mm:.10g}"
    ds.SharedFunctionalGroupsSequence = Sequence(
        [
            _item(
                PixelMeasuresSequence=Sequence(
                    [_item(PixelSpacing=[spacing, spacing], SliceThickness=0.001, SpacingBetweenSlices=0.001)]
                ),
                WholeSlideMicroscopyImageFrameTypeSequence=Sequence(
                    [_item(FrameType=["DERIVED", "PRIMARY", "VOLUME", "NONE"])]
                ),
                OpticalPathIdentificationSequence=Sequence([_item(OpticalPathIdentifier="1")]),
            )
        ]
    )


def one_tile_slide(source: Dataset) -> Dataset:
    """A copy of a single-frame image's header dressed as a VL Whole Slide Microscopy Image of one tile (same
    pixel matrix, pixel spacing and UIDs), for tools that place microscopy results on slide coordinates."""
    size, where = pixel_spacing(source)
    if size is None:
        raise ValueError(f"the source image has {where}")
    ds = copy.deepcopy(source)
    ds.SOPClassUID = WSM_IMAGE
    width, height = int(source.Columns), int(source.Rows)
    ds.NumberOfFrames = 1
    if "PerFrameFunctionalGroupsSequence" in ds:
        del ds.PerFrameFunctionalGroupsSequence
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.FrameOfReferenceUID = source.get("FrameOfReferenceUID") or derived_uid("frame", source.SOPInstanceUID)
    if "OpticalPathSequence" not in source:
        _optical_path(ds)
    _geometry(ds, width, height, size)
    return ds


def wsm_image(
    pixels: np.ndarray, *, pixel_size_um: float, fields: StudyFields, key: str, tile: int = TILE
) -> Dataset:
    """A VL Whole Slide Microscopy Image of an 8-bit grey mosaic; ``key`` (the mosaic's SHA-256) seeds
    its UIDs."""
    if pixels.ndim != 2 or pixels.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit grey image, got {pixels.dtype} of shape {pixels.shape}")
    if not pixel_size_um > 0:
        raise ValueError(f"pixel_size_um must be > 0, got {pixel_size_um}")
    height, width = pixels.shape
    when = dt.datetime.now(dt.UTC)
    identity = "|".join([key, fields.patient_id, fields.patient_name, fields.accession_number])
    study_uid = fields.study_uid or derived_uid("study", identity)
    ds = Dataset()
    ds.SOPClassUID = WSM_IMAGE
    ds.SOPInstanceUID = derived_uid("image", identity, study_uid)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.Modality = "SM"
    ds.ImageType = ["DERIVED", "PRIMARY", "VOLUME", "NONE"]
    _patient_study(ds, fields, study_uid, when)
    ds.SeriesInstanceUID = derived_uid("series", identity, study_uid)
    ds.SeriesNumber = 1
    ds.SeriesDescription = fields.series_description
    ds.FrameOfReferenceUID = derived_uid("frame of reference", identity, study_uid)
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    _equipment(ds)
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S")
    ds.AcquisitionContextSequence = Sequence()
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = tile
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = math.ceil(width / tile) * math.ceil(height / tile)
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=derived_uid("dims", key))])
    ds.FocusMethod, ds.ExtendedDepthOfField = "AUTO", "NO"
    ds.VolumetricProperties, ds.SpecimenLabelInImage = "VOLUME", "NO"
    ds.BurnedInAnnotation, ds.LossyImageCompression = "NO", "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.RescaleIntercept, ds.RescaleSlope = 0, 1
    _geometry(ds, width, height, pixel_size_um)
    _specimen(ds, key)
    _optical_path(ds)
    ds.PixelData = _tiles(pixels, tile)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def save_atomically(ds: Dataset, out: Path) -> None:
    """Write ``ds`` as a DICOM Part 10 file that appears whole or not at all."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    os.close(fd)
    try:
        ds.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)


def dicomize(
    source: Path,
    out: Path,
    *,
    fields: StudyFields,
    max_pixels: int,
    pixel_size_um: float | None = None,
    layout: VivaBlockLayout | None = None,
) -> Dataset:
    """Write the mosaic ``source`` as a VL Whole Slide Microscopy Image to ``out``; the pixel size is the
    one given, else the one the file records (a mosaic recording none needs it given)."""
    if fields.study_uid and not valid_uid(fields.study_uid):
        raise InvalidParameter(f"study UID {fields.study_uid!r} is not a DICOM UID (digits and dots)")
    mosaic = open_mosaic(source, max_pixels=max_pixels, layout=layout)
    size = pixel_size_um or mosaic.header.pixel_size_um
    if size is None:
        raise InvalidParameter(f"{source}: the file records no pixel size; give it (--pixel-size-um)")
    pixels = np.asarray(mosaic.image.numpy(), dtype=np.uint8).reshape(mosaic.image.height, mosaic.image.width)
    ds = wsm_image(pixels, pixel_size_um=size, fields=fields, key=input_sha256(Path(source)))
    save_atomically(ds, out)
    return ds
