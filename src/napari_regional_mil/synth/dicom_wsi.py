"""Write a small DICOM whole-slide image (VL Whole Slide Microscopy) from an RGB pyramid.

One JPEG-baseline, TILED_FULL instance per pyramid level in one folder, written with
pydicom: what scanners and converters produce, in miniature, for tests and demos of the
DICOM backend. Level ``i`` must be level 0 halved ``i`` times (the dyadic pyramid that
:func:`~napari_regional_mil.synth.slides.pyramid_shapes` describes).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, JPEGBaseline8Bit, generate_uid

from ..atomic import atomic_path

__all__ = ["halved_pyramid", "write_dicom_wsi"]

_WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"


def halved_pyramid(level0: np.ndarray, *, min_size: int = 64) -> list[np.ndarray]:
    """``level0`` and its 2 x 2 means (odd edges replicated) while the longer side >= ``min_size``."""
    levels = [np.ascontiguousarray(level0, dtype=np.uint8)]
    while True:
        cur = levels[-1]
        h, w = -(-cur.shape[0] // 2), -(-cur.shape[1] // 2)
        if max(h, w) < min_size:
            return levels
        padded = np.pad(cur, ((0, 2 * h - cur.shape[0]), (0, 2 * w - cur.shape[1]), (0, 0)), mode="edge")
        mean = padded.reshape(h, 2, w, 2, 3).astype(np.uint16).sum(axis=(1, 3))
        levels.append(((mean + 2) // 4).astype(np.uint8))


def _jpeg(tile: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(tile).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def _frames(level: np.ndarray, tile: int, quality: int) -> list[bytes]:
    h, w = level.shape[:2]
    rows, cols = -(-h // tile), -(-w // tile)
    padded = np.pad(level, ((0, rows * tile - h), (0, cols * tile - w), (0, 0)), mode="constant", constant_values=255)
    return [
        _jpeg(np.ascontiguousarray(padded[r * tile : (r + 1) * tile, c * tile : (c + 1) * tile]), quality)
        for r in range(rows)
        for c in range(cols)
    ]


def _level_dataset(
    level: np.ndarray, index: int, *, tile: int, mpp: float, uids: Mapping[str, str], quality: int,
    size0: tuple[int, int],
) -> Dataset:

    h, w = level.shape[:2]
    frames = _frames(level, tile, quality)
    spacing_mm = mpp * 1e-3 * (size0[0] / w)
    instance_uid = generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(_WSI_SOP_CLASS)
    meta.MediaStorageSOPInstanceUID = instance_uid
    meta.TransferSyntaxUID = JPEGBaseline8Bit
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = _WSI_SOP_CLASS
    ds.SOPInstanceUID = instance_uid
    ds.StudyInstanceUID = uids["study"]
    ds.SeriesInstanceUID = uids["series"]
    ds.FrameOfReferenceUID = uids["frame"]
    ds.DimensionOrganizationUID = uids["dimension"]
    ds.Modality = "SM"
    ds.Manufacturer = "napari-regional-mil synth"
    ds.ContainerIdentifier = "SYNTH-1"
    ds.PatientName = "Synthetic^Slide"
    ds.PatientID = "SYNTH"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = index + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"] if index == 0 else ["DERIVED", "PRIMARY", "VOLUME",
                                                                                   "RESAMPLED"]
    ds.Rows = tile
    ds.Columns = tile
    ds.TotalPixelMatrixColumns = w
    ds.TotalPixelMatrixRows = h
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.LossyImageCompressionRatio = 10
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.ImagedVolumeWidth = size0[0] * mpp * 1e-3
    ds.ImagedVolumeHeight = size0[1] * mpp * 1e-3
    ds.ImagedVolumeDepth = 0.001
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]

    measures = Dataset()
    measures.PixelSpacing = [spacing_mm, spacing_mm]
    measures.SliceThickness = 0.001
    measures.SpacingBetweenSlices = 0.001
    frame_type = Dataset()
    frame_type.FrameType = list(ds.ImageType)
    shared = Dataset()
    shared.PixelMeasuresSequence = DicomSequence([measures])
    shared.WholeSlideMicroscopyImageFrameTypeSequence = DicomSequence([frame_type])
    ds.SharedFunctionalGroupsSequence = DicomSequence([shared])

    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 20.0
    origin.YOffsetInSlideCoordinateSystem = 40.0
    ds.TotalPixelMatrixOriginSequence = DicomSequence([origin])

    path = Dataset()
    path.OpticalPathIdentifier = "0"
    code = Dataset()
    code.CodeValue = "414298005"
    code.CodingSchemeDesignator = "SCT"
    code.CodeMeaning = "Full Spectrum"
    path.IlluminationColorCodeSequence = DicomSequence([code])
    kind = Dataset()
    kind.CodeValue = "111744"
    kind.CodingSchemeDesignator = "DCM"
    kind.CodeMeaning = "Brightfield illumination"
    path.IlluminationTypeCodeSequence = DicomSequence([kind])
    ds.OpticalPathSequence = DicomSequence([path])

    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def write_dicom_wsi(
    folder: str | os.PathLike,
    levels: Sequence[np.ndarray],
    *,
    mpp: float = 0.5,
    tile: int = 64,
    jpeg_quality: int = 95,
) -> Path:
    """Write ``levels`` (RGB uint8, level 0 first, each halved) as a DICOM WSI folder.

    Parameters
    ----------
    folder
        Output folder (created); one ``level_<i>.dcm`` per level.
    levels
        ``(h, w, 3)`` uint8 images, level 0 first (see :func:`halved_pyramid`).
    mpp
        Level-0 microns per pixel.
    tile
        Tile (frame) side in px.
    jpeg_quality
        JPEG quality of the frames.

    Returns
    -------
    pathlib.Path
        The folder.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    if not levels:
        raise ValueError("levels must hold at least level 0")
    h0, w0 = levels[0].shape[:2]
    uids = {"study": generate_uid(), "series": generate_uid(), "frame": generate_uid(), "dimension": generate_uid()}
    for index, level in enumerate(levels):
        arr = np.asarray(level)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"level {index} must be (h, w, 3) uint8, got {arr.shape} {arr.dtype}")
        ds = _level_dataset(arr, index, tile=tile, mpp=mpp, uids=uids, quality=jpeg_quality, size0=(w0, h0))
        with atomic_path(out / f"level_{index}.dcm", durable=False) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
    return out
