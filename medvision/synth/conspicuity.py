"""Measure how visible a phantom's lesions are: contrast-to-noise ratio against their rim.

Used to show that domain shift between devices is real (a low-conspicuity device
gives lower lesion CNR for the same lesion) and by ``benchmarks/synth_domain_shift.py``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from medvision.dicom.reading import modality_of, pixel_values
from medvision.modality import Modality
from medvision.synth.study import GeneratedStudy

#: Per modality, the mask names whose visibility is measured.
LESION_MASKS: dict[Modality, tuple[str, ...]] = {
    Modality.CXR: ("nodule",),
    Modality.FUNDUS: ("microaneurysm", "haemorrhage", "hard_exudate"),
    Modality.MAMMO: ("malignancy",),
    Modality.CT: ("nodule",),
}
#: Width of the background rim around a lesion, in pixels.
RIM_WIDTH = 4


def lesion_cnr(image: NDArray[np.float32], mask: NDArray[np.uint8]) -> float:
    """Return ``|mean(lesion) - mean(rim)| / std(rim)`` for one lesion mask.

    The rim is the band of ``RIM_WIDTH`` pixels (voxels) around the mask.
    """
    inside = mask > 0
    rim = ndimage.binary_dilation(inside, iterations=RIM_WIDTH) & ~inside
    background = image[rim]
    spread = float(background.std())
    if not inside.any() or spread == 0.0:
        return 0.0
    return abs(float(image[inside].mean()) - float(background.mean())) / spread


def _images(study: GeneratedStudy, modality: Modality) -> dict[str, NDArray[np.float32]]:
    """Per mask UID (SOP instance, or series for CT), the image in physical units."""
    if modality == Modality.CT:
        ordered = sorted(study.instances, key=lambda ds: int(ds.InstanceNumber))
        volume = np.stack([pixel_values(ds) for ds in ordered])
        return {str(ordered[0].SeriesInstanceUID): volume}
    images = {}
    for ds in study.instances:
        values = pixel_values(ds)
        # Fundus lesions are judged on the green channel, where they contrast most.
        images[str(ds.SOPInstanceUID)] = values[..., 1] if values.ndim == 3 else values
    return images


def contrast_to_noise(study: GeneratedStudy, modality: Modality | None = None) -> float:
    """Return the mean lesion CNR over the study's non-empty lesion masks (0 if none).

    Parameters
    ----------
    study
        A generated study (uncompressed pixel data, as the generator returns it).
    modality
        The study's modality; read from the first instance's ``Modality`` when omitted.
    """
    if modality is None:
        found = modality_of(study.instances[0])
        if found is None:
            raise ValueError("cannot tell the study's modality; pass it explicitly")
        modality = found
    images = _images(study, modality)
    ratios = []
    for key, mask in study.masks.items():
        uid, _, name = key.rpartition("/")
        if name in LESION_MASKS[modality] and mask.any():
            labelled, count = ndimage.label(mask > 0)
            for index in range(1, count + 1):
                ratios.append(lesion_cnr(images[uid], (labelled == index).astype(np.uint8)))
    return float(np.mean(ratios)) if ratios else 0.0
