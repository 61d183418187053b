"""Reading DICOM files: headers, folders of studies, and pixel values in physical units."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

from medvision.modality import Modality


class DicomReadError(ValueError):
    """A file that cannot be used as DICOM; the message says which file and why."""


#: DICOM ``Modality`` values and the medvision modality that serves them.
DICOM_MODALITIES: dict[str, Modality] = {
    "DX": Modality.CXR,
    "CR": Modality.CXR,
    "OP": Modality.FUNDUS,
    "MG": Modality.MAMMO,
    "CT": Modality.CT,
}


def read_header(path: Path) -> Dataset:
    """Read a DICOM file without its pixel data.

    Raises
    ------
    DicomReadError
        If the file is not DICOM (no ``DICM`` preamble and no parsable data set)
        or lacks ``StudyInstanceUID``.
    """
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, EOFError, OSError, ValueError) as error:
        raise DicomReadError(f"{path}: not a readable DICOM file ({error})") from None
    if "StudyInstanceUID" not in ds:
        raise DicomReadError(f"{path}: missing required tag StudyInstanceUID (0020,000D)")
    return ds


def read_instance(path: Path) -> Dataset:
    """Read a whole DICOM file (pixel data included).

    Raises
    ------
    DicomReadError
        If the file is not DICOM.
    """
    try:
        return dcmread(path)
    except (InvalidDicomError, EOFError, OSError, ValueError) as error:
        raise DicomReadError(f"{path}: not a readable DICOM file ({error})") from None


def modality_of(ds: Dataset) -> Modality | None:
    """Return the medvision modality serving ``ds`` (by its DICOM ``Modality``), or None."""
    return DICOM_MODALITIES.get(str(ds.get("Modality", "")).upper())


@dataclass
class FolderScan:
    """What a folder of DICOM files holds.

    Attributes
    ----------
    studies
        Per ``StudyInstanceUID``, its files and their headers (file order).
    rejected
        Files that could not be used, each with the reason.
    """

    studies: dict[str, list[tuple[Path, Dataset]]] = field(default_factory=dict)
    rejected: list[tuple[Path, str]] = field(default_factory=list)


def iter_files(root: Path) -> Iterator[Path]:
    """Yield every regular file below ``root`` (or ``root`` itself), in sorted order.

    Symbolic links to folders are followed (a study collection is often a folder
    of links), each real folder once, so a link back up the tree cannot loop.
    """
    if root.is_file():
        yield root
        return
    visited: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:
            subfolders.clear()
            continue
        visited.add(real)
        subfolders.sort()
        for name in sorted(files):
            yield Path(folder) / name


def scan_folder(root: Path) -> FolderScan:
    """Read the headers of every file below ``root`` and group them by study.

    Files that are not DICOM are listed in :attr:`FolderScan.rejected`, never dropped
    silently.
    """
    scan = FolderScan()
    for path in iter_files(root):
        try:
            ds = read_header(path)
        except DicomReadError as error:
            scan.rejected.append((path, str(error)))
            continue
        scan.studies.setdefault(str(ds.StudyInstanceUID), []).append((path, ds))
    return scan


def age_in_years(ds: Dataset) -> int | None:
    """Return the patient's age in whole years from ``PatientAge`` (PS3.5 AS) or dates."""
    text = str(ds.get("PatientAge", "")).strip()
    if len(text) == 4 and text[:3].isdigit():
        value, unit = int(text[:3]), text[3].upper()
        return {"Y": value, "M": value // 12, "W": value // 52, "D": value // 365}.get(unit)
    birth, study = str(ds.get("PatientBirthDate", "")), str(ds.get("StudyDate", ""))
    if len(birth) == 8 and len(study) == 8 and birth.isdigit() and study.isdigit():
        years = int(study[:4]) - int(birth[:4])
        if study[4:] < birth[4:]:
            years -= 1
        return years
    return None


def _decoded_pixels(ds: Dataset) -> NDArray[Any]:
    """Return the stored pixel values of ``ds`` (decompressed by pydicom).

    Raises
    ------
    DicomReadError
        If the pixel data cannot be decoded (corrupt, or an unsupported transfer syntax).
    """
    try:
        return np.asarray(ds.pixel_array)
    except Exception as error:  # pydicom raises many types for undecodable data
        meta = getattr(ds, "file_meta", None)
        syntax = meta.get("TransferSyntaxUID", "unknown") if meta is not None else "unknown"
        raise DicomReadError(
            f"pixel data of {ds.get('SOPInstanceUID', '?')} cannot be decoded "
            f"(transfer syntax {syntax}): {error}"
        ) from None


def pixel_values(ds: Dataset) -> NDArray[np.float32]:
    """Return the pixel data in physical units, MONOCHROME1 turned into MONOCHROME2.

    Applies the Modality LUT or rescale (PS3.3 C.11.1), so CT values are in HU, and
    inverts MONOCHROME1 images so that high values are bright in every result.
    Colour images are returned as ``(rows, columns, 3)``.

    Raises
    ------
    DicomReadError
        If the pixel data cannot be decoded (corrupt, or an unsupported transfer syntax).
    """
    raw = _decoded_pixels(ds)
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        return np.asarray(raw, dtype=np.float32)
    values = np.asarray(apply_modality_lut(raw, ds), dtype=np.float32)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        bits = int(ds.get("BitsStored", 16))
        slope = float(ds.get("RescaleSlope", 1.0))
        intercept = float(ds.get("RescaleIntercept", 0.0))
        values = (2**bits - 1) * slope + 2 * intercept - values
    return values


def presentation_values(ds: Dataset) -> NDArray[np.float32]:
    """Return grayscale pixel data as it is meant to be displayed, scaled to ``[0, 1]``.

    Follows the grayscale pipeline (PS3.4 N.2.1): the Modality LUT or rescale
    (PS3.3 C.11.1), then the first VOI LUT or window (PS3.3 C.11.2; a VOI LUT
    Sequence wins over a window, as in pydicom's ``apply_voi_lut``). The result is
    scaled so that the lowest and highest storable values map to 0 and 1, and
    MONOCHROME1 is inverted last, because its minimum is displayed white *after*
    the VOI transformation (PS3.3 C.7.6.3.1.2). Without a VOI LUT or window the
    modality values are scaled the same way.

    Raises
    ------
    DicomReadError
        If the pixel data cannot be decoded, or the image is not grayscale.
    """
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        raise DicomReadError(
            f"{ds.get('SOPInstanceUID', '?')}: presentation values need a grayscale image, "
            f"got {ds.get('SamplesPerPixel')} samples per pixel"
        )
    raw = _decoded_pixels(ds)
    bits = int(ds.get("BitsStored", 16))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    storable = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
    ends = np.asarray(apply_voi_lut(apply_modality_lut(storable, ds), ds), dtype=np.float64)
    values = np.asarray(apply_voi_lut(apply_modality_lut(raw, ds), ds), dtype=np.float64)
    low, high = float(ends.min()), float(ends.max())
    scaled = np.clip((values - low) / max(high - low, 1e-12), 0.0, 1.0)
    if str(ds.get("PhotometricInterpretation", "")) == "MONOCHROME1":
        scaled = 1.0 - scaled
    return scaled.astype(np.float32)
