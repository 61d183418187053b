"""Intensity steps the MONAI library lacks.

- :class:`FieldOfViewNormalized`: per-channel normalisation inside a field of view;
- :class:`RandLesionContrastd`: a training augmentation that fades a lesion towards
  its surroundings, so faint lesions are seen as often as conspicuous ones.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config.type_definitions import KeysCollection
from monai.transforms.transform import MapTransform, RandomizableTransform
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor
from numpy.typing import NDArray
from scipy import ndimage

from medvision.transforms.spatial import ForegroundSelector


class FieldOfViewNormalized(MapTransform):
    """Normalise each channel to zero mean and unit deviation inside the field of view.

    The field of view is the largest bright region (:class:`ForegroundSelector`);
    its statistics are measured per channel and pixels outside it are set to 0.
    Measuring inside the field of view keeps the black surround of a fundus
    photograph (a third of the frame, and a different share per camera) from
    setting the scale; per-channel statistics remove camera colour casts and
    pigmentation differences in the way of the "colour normalisation" steps of
    retinal-image pipelines (e.g. Graham's preprocessing, Kaggle DR 2015).

    Parameters
    ----------
    keys
        Keys of the colour images (channel first).
    fraction
        Field-of-view threshold as a fraction of the bright level.
    """

    def __init__(
        self, keys: KeysCollection, fraction: float = 0.1, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.selector = ForegroundSelector(fraction)

    def __call__(self, data: Mapping[Any, Any]) -> dict[Hashable, Any]:
        """Return the item with its images normalised."""
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            values = np.asarray(convert_to_tensor(image, track_meta=False).detach().cpu())
            inside = self.selector.mask(values)
            pixels = values[:, inside]
            mean = pixels.mean(axis=1)
            std = np.maximum(pixels.std(axis=1), 1e-6)
            shape = (-1,) + (1,) * inside.ndim
            normalised = (values - mean.reshape(shape)) / std.reshape(shape) * inside
            d[key] = convert_to_dst_type(normalised.astype(np.float32), image)[0]
        return d


#: :func:`fade_lesion`: the surroundings are the voxels this many voxels beyond the
#: lesion, skipping the first (its partial-volume edge).
SURROUND_VOXELS = 3
#: :func:`fade_lesion`: Gaussian blur (voxels) of the lesion mask that gives the
#: fading weight, so the faded lesion keeps a soft edge.
EDGE_SIGMA_VOXELS = 1.0


def is_share_range(values: Sequence[float]) -> bool:
    """Return whether ``values`` is a ``(low, high)`` range of shares: ``0 <= low <= high <= 1``."""
    return len(values) == 2 and 0.0 <= values[0] <= values[1] <= 1.0


def lesion_surroundings(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """Return the voxels 2 to :data:`SURROUND_VOXELS` voxels beyond ``mask``: its surroundings.

    The first voxel beyond it is left out: it holds the lesion's partial-volume edge.
    """
    lesion = np.asarray(mask, dtype=bool)
    edge = ndimage.binary_dilation(lesion)
    return np.asarray(
        ndimage.binary_dilation(lesion, iterations=SURROUND_VOXELS) & ~edge, dtype=bool
    )


def fade_lesion(
    image: NDArray[np.floating[Any]], mask: NDArray[np.bool_], factor: float
) -> NDArray[np.float32]:
    """Return ``image`` with the lesion in ``mask`` faded to ``factor`` of its contrast.

    The first channel is an intensity image (e.g. windowed CT): where the lesion is
    brighter than its surroundings' median ``b`` (:func:`lesion_surroundings`), a
    voxel ``x`` becomes
    ``x - w (1 - factor) (x - b)``, with the weight ``w`` 1 inside the mask and
    falling off over its edge (the mask dilated by one voxel, blurred by
    :data:`EDGE_SIGMA_VOXELS`). Voxels darker than ``b`` are left alone, so the
    faded values stay between the surroundings and the original. Any further
    channel is a response proportional to the lesion's contrast and is scaled by
    ``1 - w (1 - factor)``: the Hessian dot filter
    (:mod:`medvision.transforms.enhancement`) is such a response (the Hessian of
    the flat surroundings is zero, and the filter is homogeneous of degree one), so
    the patch need not be filtered again: at a blob's centre the scaled channel is
    the filter of the faded image (to 1 % in the tests).

    Parameters
    ----------
    image
        ``(channels, *spatial)``.
    mask
        ``spatial`` booleans, the lesion's voxels.
    factor
        Share of the contrast kept, in ``[0, 1]``: 1 leaves the image as it is.

    Raises
    ------
    ValueError
        If the mask does not fit the image or ``factor`` is outside ``[0, 1]``.
    """
    values = np.asarray(image, dtype=np.float32)
    lesion = np.asarray(mask, dtype=bool)
    if lesion.shape != values.shape[1:]:
        raise ValueError(f"mask of shape {lesion.shape} does not fit image {values.shape}")
    if not 0.0 <= factor <= 1.0:
        raise ValueError(f"factor must be in [0, 1], got {factor}")
    if factor == 1.0 or not lesion.any():
        return values.copy()
    edge = ndimage.binary_dilation(lesion)
    weight = np.maximum(
        ndimage.gaussian_filter(edge.astype(np.float32), EDGE_SIGMA_VOXELS), lesion
    ).astype(np.float32)
    surround = lesion_surroundings(lesion)
    if not surround.any():  # the lesion fills the image: fade towards what is left
        surround = ~lesion
    if not surround.any():
        return values.copy()
    background = float(np.median(values[0][surround]))
    faded = values.copy()
    keep = 1.0 - weight * (1.0 - factor)
    faded[0] = values[0] - (1.0 - keep) * np.maximum(values[0] - background, 0.0)
    faded[1:] = values[1:] * keep
    return faded


class RandLesionContrastd(RandomizableTransform, MapTransform):
    """Training augmentation: fade the lesion of an item to a random share of its contrast.

    With probability ``prob``, when the item's mask holds lesion voxels, the image
    becomes :func:`fade_lesion` of it with a factor drawn uniformly from
    ``factors``; the mask is unchanged (the lesion is still there, only fainter).
    Devices and lesions differ in conspicuity: a ground-glass nodule, or any nodule
    on a noisy low-dose scanner, stands a few hundred HU above the lung, a solid one
    on a sharp scanner about twice as much, and a network trained on mostly
    conspicuous lesions may pass over the faint ones. Applied to patches (after the
    crop), so its cost follows the patch, not the volume.

    Parameters
    ----------
    keys
        Keys of the images (channel first).
    mask_key
        Key of the lesion mask (``(channels, *spatial)``; a voxel of any channel
        above 0.5 is lesion).
    factors
        ``(low, high)`` range of the share of contrast kept, within ``[0, 1]``.
    prob
        Probability of fading an item that holds a lesion.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str,
        factors: tuple[float, float],
        prob: float = 0.5,
    ) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        if not is_share_range(factors):
            raise ValueError(f"factors must satisfy 0 <= low <= high <= 1, got {factors}")
        self.mask_key = mask_key
        self.factors = (float(factors[0]), float(factors[1]))
        self.factor = 1.0

    def randomize(self, data: Any = None) -> None:
        """Draw whether to fade and the factor (both always, so the stream is fixed)."""
        super().randomize(None)
        self.factor = float(self.R.uniform(*self.factors))

    def __call__(self, data: Mapping[Any, Any]) -> dict[Hashable, Any]:
        """Return the item with its lesion faded (or as it is)."""
        d = dict(data)
        self.randomize()
        mask = np.asarray(convert_to_tensor(d[self.mask_key], track_meta=False).detach().cpu())
        lesion = np.asarray((mask > 0.5).any(axis=0), dtype=bool)
        if not self._do_transform or not lesion.any():
            return d
        for key in self.key_iterator(d):
            image = d[key]
            values = np.asarray(convert_to_tensor(image, track_meta=False).detach().cpu())
            faded = torch.as_tensor(fade_lesion(values, lesion, self.factor))
            d[key] = convert_to_dst_type(faded, image)[0]
        return d
