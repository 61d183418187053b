"""Intensity steps the MONAI library lacks: per-channel normalisation inside a field of view."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config.type_definitions import KeysCollection
from monai.transforms.transform import MapTransform
from monai.utils.type_conversion import convert_to_dst_type, convert_to_tensor

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
