"""Heatmap overlays as DICOM Secondary Capture images, for any PACS viewer.

One Secondary Capture Image (PS3.3 A.8.1, written with highdicom's ``SCImage``)
per heatmap: the RGB picture of :func:`medvision.explain.render_overlay` (source
image, heatmap, peak, legend band), in the source image's study, in a series of its
own whose SeriesDescription says what it is. The object says how it was made:

- ``ImageType`` DERIVED and SECONDARY, ``BurnedInAnnotation`` YES (the legend is in the
  pixels), ``ConversionType`` WSD;
- ``SourceImageSequence`` references the source image (SOP Class and Instance UIDs);
- ``DerivationDescription`` names the explanation method (Grad-CAM; HiResCAM for CT),
  the finding, its probability and threshold, and
  the model (name, version, weights SHA-256);
- Manufacturer ``medvision``, ManufacturerModelName the model's name,
  SoftwareVersions the package's version;
- patient and study attributes are copied from the source (same patient, same
  study), PatientOrientation and Laterality from the source image (type 2: empty
  where the source has none or for unpaired parts).
"""

from __future__ import annotations

import numpy as np
from highdicom.sc import SCImage
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid

from medvision import __version__

#: SeriesDescription of the heatmap series (LO: at most 64 characters).
SERIES_DESCRIPTION = "AI heatmaps (medvision) - not for primary diagnosis"
#: Manufacturer of every object medvision writes.
MANUFACTURER = "medvision"


def heatmap_secondary_capture(
    source: Dataset,
    picture: NDArray[np.uint8],
    *,
    finding: str,
    probability: float,
    threshold: float,
    model_name: str,
    model_version: str,
    weights_sha256: str,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    method: str,
) -> Dataset:
    """Return the Secondary Capture object of one heatmap overlay (see the module docstring).

    Parameters
    ----------
    source
        The source image's dataset (its header is enough).
    picture
        ``(rows, columns, 3)`` uint8 RGB, e.g. from :func:`medvision.explain.render_overlay`.
    finding, probability, threshold
        What the heatmap explains.
    model_name, model_version, weights_sha256
        The model that produced it.
    series_instance_uid, series_number, instance_number
        Where the object goes: one heatmap series per analysed study.
    method
        The explanation method the heatmap comes from (``Heatmap.method``, e.g.
        ``"Grad-CAM"``), named in ``DerivationDescription``.

    Raises
    ------
    ValueError
        If ``picture`` is not an RGB uint8 array.
    """
    if picture.dtype != np.uint8 or picture.ndim != 3 or picture.shape[2] != 3:
        raise ValueError(
            "a heatmap overlay is (rows, columns, 3) uint8 RGB, got "
            f"{picture.dtype} {picture.shape}"
        )
    orientation = source.get("PatientOrientation")
    laterality = str(source.get("ImageLaterality", source.get("Laterality", "")) or "")
    image = SCImage.from_ref_dataset(
        source,
        np.ascontiguousarray(picture),
        "RGB",
        8,
        "PATIENT",
        series_instance_uid,
        series_number,
        generate_uid(),
        instance_number,
        MANUFACTURER,
        # highdicom takes single-letter directions only; the source's own value (e.g.
        # mammography's "P\\FL") is copied over below, as the picture keeps its orientation.
        patient_orientation=("A", "F"),
        laterality=laterality if laterality in ("R", "L") else None,
    )
    if orientation:
        image.PatientOrientation = list(orientation)
    else:
        del image.PatientOrientation
        image.add_new("PatientOrientation", "CS", "")
    if "Laterality" not in image:
        image.Laterality = ""
    image.SeriesDescription = SERIES_DESCRIPTION
    image.BurnedInAnnotation = "YES"
    image.ImageType = ["DERIVED", "SECONDARY"]
    image.ManufacturerModelName = model_name[:64]
    image.SoftwareVersions = __version__
    image.DerivationDescription = (
        f"{method} heatmap of {finding}: probability {probability:.3f}, threshold "
        f"{threshold:.3f}; model {model_name} {model_version}, weights SHA-256 {weights_sha256}"
    )[:1024]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    image.SourceImageSequence = DicomSequence([reference])
    return image
