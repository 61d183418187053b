"""Modules shared by every phantom DICOM object (PS3.3 Part C.7) and deterministic UIDs."""

from __future__ import annotations

import uuid
import zlib

import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.pixels.utils import set_pixel_data
from pydicom.sr.coding import Code
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

from medvision import __version__
from medvision.synth.study import StudySpec

PHANTOM_NOTICE = "medvision phantom - synthetic data, not a patient"


def derived_uid(*parts: object) -> str:
    """Return a ``2.25`` UID derived deterministically from ``parts``.

    The UID is the decimal form of a name-based UUID (PS3.5 B.2, ISO/IEC 9834-8);
    the same parts always give the same UID.
    """
    name = "/".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


def study_uid(seed: int, modality: str, index: int) -> str:
    """Return the ``StudyInstanceUID`` of study ``index`` of a run."""
    return derived_uid("medvision-synth", seed, modality, index)


def new_instance(
    spec: StudySpec,
    *,
    sop_class_uid: str,
    series_instance_uid: str,
    series_number: int,
    series_description: str,
    instance_number: int,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY"),
) -> Dataset:
    """Return a dataset holding the modules every phantom image shares.

    Fills the Patient, General Study, Patient Study, General Series, General
    Equipment, General Image and SOP Common modules (PS3.3 C.7.1.1, C.7.2.1,
    C.7.2.2, C.7.3.1, C.7.5.1, C.7.6.1, C.12.1) and the file meta information.
    Modality-specific modules and pixel data are added by the caller.
    """
    sop_instance_uid = spec.uid("instance", series_instance_uid, instance_number)
    ds = Dataset()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = f"MEDVISION_{__version__}"[:16]
    ds.file_meta = meta

    date = spec.acquired.strftime("%Y%m%d")
    time = spec.acquired.strftime("%H%M%S")
    patient = spec.patient

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = date
    ds.InstanceCreationTime = time
    ds.StudyDate = date
    ds.SeriesDate = date
    ds.ContentDate = date
    ds.AcquisitionDateTime = spec.acquired.strftime("%Y%m%d%H%M%S")
    ds.StudyTime = time
    ds.SeriesTime = time
    ds.ContentTime = time
    ds.AccessionNumber = f"PH{spec.seed % 1000:03d}{spec.index:06d}"
    ds.Modality = spec.device.dicom_modality
    ds.Manufacturer = spec.device.manufacturer
    ds.InstitutionName = spec.site.name
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = f"Phantom {spec.modality.value.upper()} study"
    ds.SeriesDescription = series_description
    ds.ManufacturerModelName = spec.device.model
    ds.DeviceSerialNumber = f"PH-{zlib.crc32(spec.device.model.encode()) % 10_000:04d}"
    ds.SoftwareVersions = f"medvision-synth {__version__}"
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d")
    ds.PatientSex = patient.sex
    ds.PatientAge = f"{patient.age_years:03d}Y"
    ds.EthnicGroup = patient.ethnicity
    ds.PatientIdentityRemoved = "NO"
    ds.StudyInstanceUID = spec.study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.StudyID = f"{spec.index + 1}"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.ImageType = list(image_type)
    ds.ImageComments = PHANTOM_NOTICE
    ds.BurnedInAnnotation = "NO"
    return ds


def set_pixels(
    ds: Dataset, pixels: NDArray[np.generic], photometric: str, bits_stored: int
) -> None:
    """Store ``pixels`` in ``ds`` uncompressed (Image Pixel module, PS3.3 C.7.6.3).

    Parameters
    ----------
    ds
        The dataset to update.
    pixels
        ``(rows, columns)`` grey-scale or ``(rows, columns, 3)`` RGB values, unsigned.
    photometric
        ``PhotometricInterpretation``.
    bits_stored
        ``BitsStored``; every value must fit in it.

    Raises
    ------
    ValueError
        If a value does not fit in ``bits_stored`` bits.
    """
    if pixels.size and int(pixels.max()) >= 2**bits_stored:
        raise ValueError(f"pixel value {int(pixels.max())} does not fit in {bits_stored} bits")
    set_pixel_data(ds, pixels, photometric, bits_stored, generate_instance_uid=False)


def code_item(code: Code) -> Dataset:
    """Return a Code Sequence item (PS3.3 Table 8.8-1) for ``code``."""
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item
