"""DICOM in and out: mosaics read from Confocal Microscopy and VL Whole Slide Microscopy images
(:mod:`.read`), results written as DICOM Segmentations (:mod:`.segmentation`), any mosaic made a VL Whole
Slide Microscopy image (:mod:`.dicomize`) and a PACS spoken to over DICOMweb (:mod:`.web`).

Imports no torch: the API reads uploads through :mod:`.read`.
"""
