"""Where a lung nodule can lie: the lungs of a chest CT, found from attenuation alone.

Computer-aided nodule detection looks for nodules inside the lungs (the LUNA16
systems segment the lungs first; Setio et al. 2017). The CT segmenter is trained
on patches of the chest, so windows of the sliding-window pass that hold only the
air around the patient are unlike anything it saw, and it marks voxels there
(measured: ``benchmarks/ct_components.py``, docs/training.md). The scorer
therefore keeps only components that reach into the lung region:

1. voxels below :data:`AIR_HU` (air and aerated lung);
2. per axial slice, the 2-D components of those that touch the slice's edge are
   dropped (the air around the patient), and the holes of the rest are filled
   (vessels, nodules and airway walls inside the lung are denser than the threshold);
3. a 3-D closing by :data:`CLOSING_MM` (Euclidean distance in mm) takes in what lies
   against the lung's edge: nodules on the pleura, vessels at the hila.

The trachea and the main bronchi (air inside the patient) stay in the region; so
would bowel gas in the upper abdomen. Only the lung window's range matters: the
image must show air apart from soft tissue.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

#: Voxels below this (HU) are air or aerated lung (the usual -400 to -500 HU cut of
#: lung segmentation; lung parenchyma reads about -850, soft tissue above -100).
AIR_HU = -400.0
#: Radius (mm) of the closing that takes in what lies against the lung's edge.
CLOSING_MM = 10.0


def lung_region(
    air: NDArray[np.bool_], voxel_mm: Sequence[float], closing_mm: float = CLOSING_MM
) -> NDArray[np.bool_]:
    """Return the lung region of a chest CT from its air voxels (see the module docstring).

    Parameters
    ----------
    air
        ``(X, Y, Z)`` boolean map of the voxels below :data:`AIR_HU`; the axial
        plane is the first two axes (MONAI's RAS model space: Z runs head-foot).
    voxel_mm
        Voxel size along the three axes, in mm.
    closing_mm
        Radius of the 3-D closing, in mm (0: none).

    Returns
    -------
    numpy.ndarray
        Boolean map of the same shape: the lungs, their holes filled and their
        edge closed; empty when no air lies inside the patient.

    Raises
    ------
    ValueError
        If ``air`` is not 3-D or ``voxel_mm`` does not give three positive sizes.
    """
    air = np.asarray(air, dtype=bool)
    spacing = tuple(float(v) for v in voxel_mm)
    if air.ndim != 3:
        raise ValueError(f"the air map must be 3-D (X, Y, Z), got shape {air.shape}")
    if len(spacing) != 3 or min(spacing) <= 0.0:
        raise ValueError(f"voxel_mm must give three positive sizes, got {spacing}")
    region = np.zeros_like(air)
    for z in range(air.shape[2]):
        plane = air[:, :, z]
        labels, _ = ndimage.label(plane)
        edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        inside = plane & ~np.isin(labels, edge[edge > 0])
        region[:, :, z] = ndimage.binary_fill_holes(inside)
    if closing_mm > 0.0 and region.any():
        grown = ndimage.distance_transform_edt(~region, sampling=spacing) <= closing_mm
        region = ndimage.distance_transform_edt(grown, sampling=spacing) > closing_mm
    return np.asarray(region, dtype=bool)
