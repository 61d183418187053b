"""Is a heatmap faithful? Localisation against ground truth, and the model-randomisation check.

- **Pointing game** (Zhang et al. 2016): a heatmap *hits* when its peak lies on the
  lesion, or within :data:`POINTING_TOLERANCE_PX` pixels of it (the tolerance of the
  original pointing game, on the source image's grid); for a CT volume, within
  :data:`POINTING_TOLERANCE_MM` millimetres of the nodule in 3-D.
- **Mass inside the lesion**: the share of the heatmap's total that falls on lesion
  pixels (1 is all of it; a uniform heatmap scores the lesion's area fraction).
- **Model-randomisation check** (Adebayo et al. 2018, "Sanity checks for saliency
  maps"): the same study explained by a copy of the network whose weights were all
  drawn anew (:func:`randomised_copy`) must give a different heatmap. Similarity is
  the Spearman rank correlation of the two heatmaps' pixels
  (:func:`rank_correlation`); a method that shows the image rather than the model
  keeps it high. The check passes when the mean correlation is at most
  :data:`RANDOMISATION_MAX_CORRELATION`, a bound set before measuring.

Ground truth comes from the phantoms' masks (:data:`LESION_MASKS`: per modality and
finding, the masks whose union is "the lesion").
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import ndimage
from scipy.stats import spearmanr
from torch import nn

from medvision.modality import LESION_MASKS, Modality

#: Pixels a pointing-game peak may lie off the lesion and still hit (Zhang et al. 2016).
POINTING_TOLERANCE_PX = 15
#: CT: millimetres a 3-D peak may lie off the nodule and still hit (about two voxels of
#: the phantoms' 2.2-3 mm grid; 15 voxels would be 35 mm, as far as a nodule's neighbour).
POINTING_TOLERANCE_MM = 5.0
#: Largest mean rank correlation with the randomised model's heatmaps that passes.
RANDOMISATION_MAX_CORRELATION = 0.5


def lesion_mask(
    masks: Mapping[str, NDArray[np.generic]], modality: Modality, finding: str, sop_uid: str
) -> NDArray[np.bool_] | None:
    """Return the finding's lesion on one image (a CT series), from a phantom's masks file.

    ``masks`` holds the arrays of the study's ``masks`` file (keys
    ``<SOPInstanceUID>__<mask name>``; for CT ``<SeriesInstanceUID>__<mask name>``,
    a volume with slices in InstanceNumber order, so ``sop_uid`` is the series').
    ``None`` when the image has none of the lesion's masks.

    Raises
    ------
    KeyError
        If no lesion masks are defined for ``modality`` and ``finding``.
    """
    names = LESION_MASKS[modality][finding]
    parts = [
        np.asarray(masks[f"{sop_uid}__{name}"]) > 0
        for name in names
        if f"{sop_uid}__{name}" in masks
    ]
    if not parts:
        return None
    return np.logical_or.reduce(parts)


def _same_grid(first: NDArray[np.generic], second: NDArray[np.generic]) -> None:
    if first.shape != second.shape:
        raise ValueError(f"maps of shapes {first.shape} and {second.shape} differ in shape")


def pointing_game_hit(
    heatmap: NDArray[np.floating],
    lesion: NDArray[np.bool_],
    tolerance: float = POINTING_TOLERANCE_PX,
    spacing_mm: Sequence[float] | None = None,
) -> bool:
    """Return whether the heatmap's peak lies within ``tolerance`` of the lesion.

    ``tolerance`` is in pixels (voxels), or in millimetres when ``spacing_mm`` gives
    the size of a pixel (voxel) along each axis.

    Raises
    ------
    ValueError
        If the grids differ or the lesion is empty (nothing to point at).
    """
    _same_grid(heatmap, lesion)
    if not lesion.any():
        raise ValueError("the lesion mask is empty: there is nothing to point at")
    peak = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    distance = ndimage.distance_transform_edt(~lesion, sampling=spacing_mm)
    return bool(distance[peak] <= tolerance)


def mass_inside(heatmap: NDArray[np.floating], lesion: NDArray[np.bool_]) -> float:
    """Return the share of the heatmap's total on lesion pixels (NaN for an all-zero heatmap).

    Raises
    ------
    ValueError
        If the grids differ.
    """
    _same_grid(heatmap, lesion)
    values = np.clip(np.asarray(heatmap, dtype=np.float64), 0.0, None)
    total = float(values.sum())
    return float(values[lesion].sum()) / total if total > 0 else float("nan")


def rank_correlation(first: NDArray[np.floating], second: NDArray[np.floating]) -> float:
    """Return the Spearman rank correlation of two heatmaps' pixels (NaN if one is constant).

    Raises
    ------
    ValueError
        If the grids differ.
    """
    _same_grid(first, second)
    a, b = np.ravel(first), np.ravel(second)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def randomised_copy(network: nn.Module, seed: int = 0) -> nn.Module:
    """Return a copy of ``network`` with every parameterised layer re-initialised.

    Each module with a ``reset_parameters`` method draws its weights anew (PyTorch's
    default initialisation) from a generator seeded with ``seed``; normalisation
    layers' running statistics are reset as well. ``network`` is not changed.
    """
    randomised = copy.deepcopy(network)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        for module in randomised.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
            reset_stats = getattr(module, "reset_running_stats", None)
            if callable(reset_stats):
                reset_stats()
    finally:
        torch.random.set_rng_state(state)
    return randomised.eval()
