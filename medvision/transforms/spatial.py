"""Spatial steps the MONAI library lacks: fit-resize, canonical laterality, foreground.

The two transforms record themselves in the MetaTensor's ``applied_operations``
as MONAI's own do, so ``Compose.inverse`` and ``Invertd`` undo them (MONAI
documentation, "Invertible transforms", ``monai.transforms.InvertibleTransform``);
the foreground selector chooses the box of MONAI's invertible ``CropForegroundd``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config.type_definitions import KeysCollection, NdarrayOrTensor
from monai.data.meta_obj import get_track_meta
from monai.data.meta_tensor import MetaTensor
from monai.transforms.inverse import InvertibleTransform
from monai.transforms.spatial.array import Flip, Resize
from monai.transforms.spatial.dictionary import Resized
from monai.transforms.spatial.functional import resize
from monai.transforms.transform import MapTransform
from monai.utils.enums import TraceKeys
from monai.utils.type_conversion import convert_to_tensor, get_equivalent_dtype
from scipy import ndimage

from medvision.transforms.loading import IMAGE_KEY

#: Extra-info key recording whether :class:`CanonicalLateralityd` flipped an image.
FLIPPED = "flipped_to_canonical"


class ForegroundSelector:
    """Select the largest connected region brighter than a fraction of the bright level.

    For ``CropForegroundd(select_fn=...)`` and for masks of the field of view:
    the image (channels averaged) is thresholded at ``fraction`` of its
    ``percentile``-th percentile and only the largest 8-connected region is kept,
    so that burnt-in labels, markers and noise specks outside the anatomy do not
    widen the box. An image with no such region selects everything.

    Parameters
    ----------
    fraction
        Threshold as a fraction of the bright level (0 to 1).
    percentile
        Percentile taken as the bright level (robust to a few hot pixels).
    """

    def __init__(self, fraction: float, percentile: float = 99.0) -> None:
        if not 0.0 < fraction < 1.0 or not 0.0 < percentile <= 100.0:
            raise ValueError(
                f"fraction must be in (0, 1) and percentile in (0, 100], got {fraction}, "
                f"{percentile}"
            )
        self.fraction = fraction
        self.percentile = percentile

    def mask(self, image: NdarrayOrTensor) -> np.ndarray[Any, np.dtype[np.bool_]]:
        """Return the selected region of a ``(channels, *spatial)`` image, ``(*spatial)``."""
        values = np.asarray(convert_to_tensor(image, track_meta=False).detach().cpu())
        mean = values.mean(axis=0)
        above = mean > self.fraction * float(np.percentile(mean, self.percentile))
        labels, count = ndimage.label(above, structure=np.ones((3,) * mean.ndim))
        if count == 0:
            return np.ones(mean.shape, dtype=bool)
        sizes = np.bincount(labels.ravel())[1:]
        return np.asarray(labels == int(np.argmax(sizes)) + 1)

    def __call__(self, image: NdarrayOrTensor) -> torch.Tensor:
        """Return the selection as a ``(1, *spatial)`` boolean tensor (``select_fn`` form)."""
        return torch.from_numpy(self.mask(image)[np.newaxis])


class ResizeToFit(Resize):
    """Resize, keeping the aspect ratio, to the largest size that fits ``spatial_size``.

    Pad afterwards (``SpatialPadd``) to get exactly ``spatial_size``. Inverted by
    MONAI's ``Resize.inverse`` (the original size is in the trace).
    """

    def __call__(
        self,
        img: torch.Tensor,
        mode: str | None = None,
        align_corners: bool | None = None,
        anti_aliasing: bool | None = None,
        anti_aliasing_sigma: Sequence[float] | float | None = None,
        dtype: Any = None,
        lazy: bool | None = None,
    ) -> torch.Tensor:
        """Resize ``img`` (channel first) to fit the box; arguments as MONAI's ``Resize``."""
        shape = tuple(img.shape[1:])
        if isinstance(img, MetaTensor):
            shape = tuple(img.peek_pending_shape())  # type: ignore[no-untyped-call]
        wanted = dtype or self.dtype or img.dtype
        compute_dtype = get_equivalent_dtype(wanted, torch.Tensor)  # type: ignore[no-untyped-call]
        box = tuple(int(s) for s in np.atleast_1d(self.spatial_size))
        if len(box) != len(shape):
            raise ValueError(f"box {box} and image {tuple(shape)} differ in dimensions")
        scale = min(b / float(s) for b, s in zip(box, shape, strict=True))
        fitted = tuple(
            min(b, max(1, round(float(s) * scale))) for b, s in zip(box, shape, strict=True)
        )
        return resize(  # type: ignore[no-untyped-call]
            img,
            fitted,
            self.mode if mode is None else mode,
            self.align_corners if align_corners is None else align_corners,
            compute_dtype,
            len(shape),
            self.anti_aliasing if anti_aliasing is None else anti_aliasing,
            self.anti_aliasing_sigma if anti_aliasing_sigma is None else anti_aliasing_sigma,
            self.lazy if lazy is None else lazy,
            self.get_transform_info(),
        )


class ResizeToFitd(Resized):
    """Dictionary version of :class:`ResizeToFit`; arguments as ``monai.transforms.Resized``."""

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        mode: Sequence[str] | str = "bilinear",
        anti_aliasing: Sequence[bool] | bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(
            keys,
            spatial_size,
            mode=mode,
            anti_aliasing=anti_aliasing,
            allow_missing_keys=allow_missing_keys,
        )
        self.resizer = ResizeToFit(spatial_size=tuple(spatial_size))


class CanonicalLateralityd(MapTransform, InvertibleTransform):
    """Flip right-breast views left-right so that every chest wall is on the image's left.

    Left breasts are displayed with the chest wall on the left, right breasts on
    the right (PS3.3 C.8.11.7 and the mammography phantoms' PatientOrientation);
    one canonical laterality lets one model see every view alike. The image's
    ``meta`` laterality decides; whether the view was flipped is recorded in its
    trace (so ``Compose.inverse`` flips a heatmap back) and in ``meta``
    (:data:`FLIPPED`).

    Parameters
    ----------
    keys
        Keys flipped together (image and masks).
    laterality_key
        Key of the MetaTensor whose ``meta["laterality"]`` decides.
    """

    def __init__(
        self,
        keys: KeysCollection,
        laterality_key: str = IMAGE_KEY,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.laterality_key = laterality_key
        self.flipper = Flip(spatial_axis=1)

    def __call__(self, data: Mapping[Any, Any]) -> dict[Hashable, Any]:
        """Flip the item's keys if its laterality is R; record the decision."""
        d = dict(data)
        source = d[self.laterality_key]
        laterality = (
            str(source.meta.get("laterality", "")) if isinstance(source, MetaTensor) else ""
        )
        if laterality not in {"R", "L"}:
            raise ValueError(f"canonical laterality needs laterality R or L, got '{laterality}'")
        flip = laterality == "R"
        for key in self.key_iterator(d):
            image = convert_to_tensor(d[key], track_meta=get_track_meta())
            if flip:
                with self.flipper.trace_transform(False):
                    image = self.flipper(image)
            if isinstance(image, MetaTensor):
                image.meta[FLIPPED] = flip
            d[key] = self.push_transform(image, extra_info={FLIPPED: flip})  # type: ignore[no-untyped-call]
        return d

    def inverse(self, data: Mapping[Any, Any]) -> dict[Hashable, Any]:
        """Flip back the keys that were flipped."""
        d = dict(data)
        for key in self.key_iterator(d):
            trace = self.pop_transform(d[key])
            if trace[TraceKeys.EXTRA_INFO][FLIPPED]:
                with self.flipper.trace_transform(False):
                    d[key] = self.flipper(d[key])
        return d
