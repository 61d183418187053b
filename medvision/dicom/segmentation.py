"""CT nodule masks as DICOM Segmentation objects (binary SEG, written with highdicom).

One Segmentation per CT series with a nodule mask: one segment, "nodule"
(category Morphologically Abnormal Structure, SCT 49755003; type Nodule, SCT
27925004), algorithm type AUTOMATIC with the model identified (name, version,
family "Artificial Intelligence" DCM 123110, weights SHA-256 as a parameter). It
references every slice of the source series and keeps a frame for every slice, the
empty ones included (``omit_empty_frames=False``): viewers such as OHIF align a SEG
with its series frame by frame.

The mask comes from the segmenter's scorer on the DICOM grid, ``(slices, rows,
columns)`` with slices in InstanceNumber order
(:class:`medvision.inference.scoring.StudyScore`), so the source slices are sorted
the same way before the object is built.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from medvision import __version__

#: SeriesDescription of the SEG series (LO: at most 64 characters).
SERIES_DESCRIPTION = "AI nodule segmentation (medvision) - not for diagnosis"
#: SeriesNumber of the SEG series medvision adds to a study.
SEG_SERIES_NUMBER = 9003


def nodule_segmentation(
    slices: Sequence[Dataset],
    mask: NDArray[np.integer] | NDArray[np.bool_],
    *,
    model_name: str,
    model_version: str,
    weights_sha256: str,
    series_instance_uid: str,
    instance_number: int = 1,
) -> hd.seg.Segmentation:
    """Return the binary SEG of a CT series' nodule mask (see the module docstring).

    Parameters
    ----------
    slices
        Every slice of the source series (datasets with their geometry; any order).
    mask
        ``(slices, rows, columns)``, non-zero on nodule voxels, slices in
        InstanceNumber order.
    model_name, model_version, weights_sha256
        The segmenter that made the mask.
    series_instance_uid, instance_number
        Where the object goes (:data:`SEG_SERIES_NUMBER` is the series number).

    Raises
    ------
    ValueError
        If there are no slices, the slices belong to several series, or the mask's
        shape is not the series' ``(slices, rows, columns)``.
    """
    if not slices:
        raise ValueError("a segmentation needs its source slices")
    series = {str(s.SeriesInstanceUID) for s in slices}
    if len(series) > 1:
        raise ValueError(f"the slices come from {len(series)} series; a SEG covers one")
    ordered = sorted(slices, key=lambda s: int(s.InstanceNumber))
    expected = (len(ordered), int(ordered[0].Rows), int(ordered[0].Columns))
    if tuple(mask.shape) != expected:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not fit the series' {expected}")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name,
        family=codes.cid7162.ArtificialIntelligence,
        version=model_version,
        parameters={"weights SHA-256": weights_sha256},
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label="nodule",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    segmentation = hd.seg.Segmentation(
        source_images=ordered,
        pixel_array=(np.asarray(mask) > 0).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=series_instance_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer="medvision",
        manufacturer_model_name=model_name[:64],
        software_versions=__version__,
        device_serial_number="none",
        omit_empty_frames=False,
        series_description=SERIES_DESCRIPTION,
    )
    return segmentation
