"""A result as DICOM Segmentations of its DICOM source, written with highdicom.

A Segmentation instance has one segmentation type, so a result has two: ``segmentation.dcm``, BINARY, the
mask at the job's threshold, and ``probability.dcm``, FRACTIONAL (PROBABILITY), the heat in 1/255 steps.
Both have the source's geometry: its pixel matrix, tiled like the source where it is tiled, and lie in a new
series of the source's study.

The heat is computed at processing resolution, one value per ``downsample`` x ``downsample`` block of source
pixels (the mosaic is area-averaged by that factor before the network sees it). On the source grid each block
gets its value by nearest-neighbour replication, not bilinear interpolation: the network computed nothing
between block centres, a replicated mask is exactly ``heat >= threshold`` of ``mask.tif`` with the summary's
area, and it is how the viewer draws the heat over the mosaic. The 0-``downsample - 1`` source rows and
columns the area average leaves out are 0 (not segmented).

UIDs are derived from the result key (mosaic, weights and parameters), so a retried job or a second store
of the same result has the same SOP Instance UID and a PACS keeps one copy. Imports no torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

from worker.contract import PROBABILITY_DICOM, SEGMENTATION_DICOM
from worker.errors import ExportFailed
from worker.io.dicom.dicomize import MANUFACTURER, derived_uid, one_tile_slide, save_atomically
from worker.io.dicom.read import WSM_IMAGE, describe
from worker.provenance import package_version

if TYPE_CHECKING:
    from worker.io.checkpoint import LoadedModel
    from worker.params import SegmentParams

SEGMENT_CATEGORY = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
"""CID 7150 (Segmentation Property Categories)."""
SEGMENT_TYPE = hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
"""The paper's "aspecific" class: loss of the regular architecture of the dermal-epidermal junction from
injury, inflammation, pre-malignancy or malignancy. SNOMED CT's morphologic abnormality says exactly that
much; Lesion, Neoplasm or Melanoma would claim a diagnosis the model does not make."""
SEGMENT_LABEL = "aspecific"
SERIES_NUMBER = {"BINARY": 901, "FRACTIONAL": 902}
"""Series numbers of the two results, apart from a scanner's usual 1..n."""
TRANSFER_SYNTAX = {"BINARY": ExplicitVRLittleEndian, "FRACTIONAL": JPEGLSLossless}
"""The mask is stored a bit per pixel (the only packing BINARY allows); the probability, a byte per pixel
in blocks of equal values, losslessly as JPEG-LS: 8 times smaller than raw on a smooth heat, as fast to
write, and decoded by the toolkits PACS and viewers use (DCMTK, CharLS)."""


@dataclass(frozen=True, kw_only=True)
class SegAlgorithm:
    """The model as the Segmentations' algorithm identification, and what identifies the result."""

    name: str
    version: str
    weights_sha256: str
    parameters: dict[str, str]
    intended_use: str
    result_key: str


def result_key(*, input_sha256: str, weights_sha256: str, params: dict[str, Any], threshold: float) -> str:
    """What a result's UIDs derive from: the mosaic, the weights and every parameter that changes it."""
    identity = {"mosaic": input_sha256, "weights": weights_sha256, "params": params, "threshold": threshold}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def seg_algorithm(
    model: LoadedModel, *, params: SegmentParams, input_sha256: str, threshold: float
) -> SegAlgorithm:
    """The model of a run as its Segmentations name it, and the run's result key."""
    card = model.card
    return SegAlgorithm(
        name=card.name,
        version=package_version(),
        weights_sha256=model.weights_sha256,
        parameters={
            "arch": card.arch,
            "cam": params.cam,
            "mode": params.mode,
            "step": str(params.step),
            "sigma": params.sigma if isinstance(params.sigma, str) else f"{params.sigma:g}",
            "threshold": f"{threshold:g}",
        },
        intended_use=card.intended_use,
        result_key=result_key(
            input_sha256=input_sha256,
            weights_sha256=model.weights_sha256,
            params=params.identity(),
            threshold=threshold,
        ),
    )


def result_uids(key: str, segmentation_type: str) -> tuple[str, str]:
    """The series and SOP Instance UIDs of one of a result's Segmentations."""
    return derived_uid("seg series", key, segmentation_type), derived_uid(
        "seg instance", key, segmentation_type
    )


def on_source_grid(values: np.ndarray, downsample: int, shape: tuple[int, int]) -> np.ndarray:
    """Processing-resolution ``values`` on the source's pixel grid by nearest-neighbour replication, the
    rows and columns left out by the area average as 0."""
    h, w = values.shape
    out = np.zeros(shape, dtype=values.dtype)
    block = np.broadcast_to(values[:, None, :, None], (h, downsample, w, downsample))
    out[: h * downsample, : w * downsample] = block.reshape(h * downsample, w * downsample)
    return out


def _description(algorithm: SegAlgorithm) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=SEGMENT_LABEL,
        segmented_property_category=SEGMENT_CATEGORY,
        segmented_property_type=SEGMENT_TYPE,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name=algorithm.name[:64],
            family=codes.cid7162.ArtificialIntelligence,
            version=algorithm.version[:64],
            source="rcmseg",
            parameters={"weights_sha256": algorithm.weights_sha256, **algorithm.parameters},
        ),
    )


def _tiling(source: Dataset) -> dict[str, Any]:
    """highdicom's tiling options for a tiled source: its own tiles, each frame placed by its position.

    The frames carry their positions (TILED_SPARSE, every tile present) rather than relying on TILED_FULL's
    implied order: the validator of dicom3tools (2022) does not know a TILED_FULL Segmentation yet, and
    readers handle both alike."""
    if "TotalPixelMatrixColumns" not in source:
        return {}
    return {
        "tile_pixel_array": True,
        "tile_size": (int(source.Columns), int(source.Rows)),
        "dimension_organization_type": hd.DimensionOrganizationTypeValues.TILED_SPARSE,
    }


def _refer_to(seg: Dataset, sop_class: str) -> None:
    """The references of ``seg`` to its one-frame source name the source's real SOP class, without a frame
    number (a reference to every frame of an instance names none)."""
    for item in list(seg.iterall()):
        if item.keyword == "ReferencedSOPClassUID" and item.value == WSM_IMAGE:
            item.value = sop_class
    for sequence in _sequences(seg):
        for ref in sequence:
            if "ReferencedSOPInstanceUID" in ref and "ReferencedFrameNumber" in ref:
                del ref.ReferencedFrameNumber


def _sequences(ds: Dataset) -> list[list[Dataset]]:
    found = []
    for element in ds.iterall():
        if element.VR == "SQ":
            found.append(list(element.value))
    return found


def segmentation(
    source: Dataset, pixels: np.ndarray, *, segmentation_type: str, algorithm: SegAlgorithm
) -> hd.seg.Segmentation:
    """One Segmentation of ``source`` (a header: no pixel data needed) from pixels on its grid.

    highdicom places a microscopy Segmentation on slide coordinates, which a single-frame Confocal
    Microscopy Image does not have: it is given as a one-tile slide image of the same pixel matrix and pixel
    spacing, and the Segmentation's references name its real SOP class."""
    series_uid, instance_uid = result_uids(algorithm.result_key, segmentation_type)
    kind = "mask" if segmentation_type == "BINARY" else "probability"
    single = "TotalPixelMatrixColumns" not in source
    seg = hd.seg.Segmentation(
        source_images=[one_tile_slide(source) if single else source],
        pixel_array=pixels,
        segmentation_type=segmentation_type,
        segment_descriptions=[_description(algorithm)],
        series_instance_uid=series_uid,
        series_number=SERIES_NUMBER[segmentation_type],
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name[:64],
        software_versions=algorithm.version,
        device_serial_number="0",
        max_fractional_value=255,
        transfer_syntax_uid=TRANSFER_SYNTAX[segmentation_type],
        content_label="ASPECIFIC",
        content_description=f"aspecific {kind}"[:64],
        omit_empty_frames=False,
        **_tiling(source),
    )
    use = f"rcmseg {kind}: {algorithm.intended_use}" if algorithm.intended_use else f"rcmseg {kind}"
    seg.SeriesDescription = use[:64]
    if "PatientOrientation" not in seg:
        seg.PatientOrientation = ""
    if single:
        _refer_to(seg, str(source.SOPClassUID))
    return seg


@dataclass(frozen=True, kw_only=True)
class DicomResult:
    """The Segmentations written for one result: file names and SOP Instance UIDs."""

    files: dict[str, str]


def write_segmentations(
    out: Path,
    *,
    source_path: Path,
    heat: np.ndarray,
    mask: np.ndarray,
    downsample: int,
    algorithm: SegAlgorithm,
) -> DicomResult:
    """``segmentation.dcm`` (mask > 0) and ``probability.dcm`` (heat) of the DICOM mosaic at ``source_path``
    into ``out``; ``heat`` and ``mask`` are at processing resolution."""
    try:
        return _write_both(out, source_path, heat, mask, downsample, algorithm)
    except ValueError as exc:  # highdicom's refusal of a source it cannot place a Segmentation on
        raise ExportFailed(f"the DICOM Segmentation could not be written: {exc}") from None


def _write_both(
    out: Path, source_path: Path, heat: np.ndarray, mask: np.ndarray, downsample: int, algorithm: SegAlgorithm
) -> DicomResult:
    info = describe(source_path)
    source = pydicom.dcmread(info.path, stop_before_pixels=True)
    shape = (info.height, info.width)
    files = {}
    binary = on_source_grid((np.asarray(mask) > 0).astype(np.uint8), downsample, shape)
    seg = segmentation(source, binary, segmentation_type="BINARY", algorithm=algorithm)
    del binary
    save_atomically(seg, out / SEGMENTATION_DICOM)
    files[SEGMENTATION_DICOM] = str(seg.SOPInstanceUID)
    del seg
    fraction = on_source_grid(np.clip(np.asarray(heat, dtype=np.float32), 0.0, 1.0), downsample, shape)
    seg = segmentation(source, fraction, segmentation_type="FRACTIONAL", algorithm=algorithm)
    save_atomically(seg, out / PROBABILITY_DICOM)
    files[PROBABILITY_DICOM] = str(seg.SOPInstanceUID)
    return DicomResult(files=files)
