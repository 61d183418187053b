"""Where training patches are centred: lesion, background and hard-negative voxel indices.

``RandCropByPosNegLabeld`` draws each patch centre uniformly from a list of flat voxel
indices: the lesion's (foreground) or the background's. MONAI computes both lists
from the whole image and mask on every call, and the lesion-balanced and
hard-negative variants (:func:`lesion_balanced_indices`, :func:`with_hard_negatives`)
add to that: work over every voxel of the scan, the same on every call
(``benchmarks/ct_patch_supply.py`` measures the supply; docs/training.md, "GPU
session", gives it before and after).

:class:`CropCentreIndicesd` computes the lists once, in the chain's deterministic
part, so a ``CacheDataset`` keeps them with the cached image. The background list
is long (every voxel of tissue), so it is kept compact: :class:`MaskIndices` holds
the mask's bits and the running count of set voxels per image line, and gives the
same index at each position as ``numpy.flatnonzero`` would; :class:`CyclicTail`
appends the hard negatives repeated cyclically without copying them. A cropper given
these lists draws exactly the centres it would have drawn from the lists it computes
itself (same random state, same positions, same indices; tested).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, Protocol

import numpy as np
import torch
from monai.config.type_definitions import KeysCollection
from monai.transforms.transform import MapTransform
from numpy.typing import NDArray
from scipy import ndimage

#: Item keys under which :class:`CropCentreIndicesd` leaves the lists for the cropper
#: (``RandCropByPosNegLabeld``'s ``fg_indices_key`` and ``bg_indices_key``, which it pops).
FOREGROUND_INDICES_KEY = "crop_centres_lesion"
BACKGROUND_INDICES_KEY = "crop_centres_background"


class FlatIndices(Protocol):
    """Flat voxel indices that a cropper draws from by position (length and item)."""

    def __len__(self) -> int:
        """Return the number of positions."""
        ...

    def __getitem__(self, position: int, /) -> Any:
        """Return the flat voxel index at ``position``."""
        ...


def _as_array(values: Any) -> NDArray[np.int64]:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
    return np.asarray(values, dtype=np.int64)


def _position(position: int, length: int) -> int:
    index = int(position)
    if index < 0:
        index += length
    if not 0 <= index < length:
        raise IndexError(f"position {position} out of range for {length} indices")
    return index


class MaskIndices:
    """``numpy.flatnonzero(mask)``, held as the mask's bits and running counts per line.

    A line is the run of voxels along the mask's last axis. Position ``k`` is found
    by a binary search of the running counts for its line, then among that line's
    set voxels: about 0.6 MB for a CT scan of 2.7 million voxels, against 8 bytes a
    set voxel for the index array.

    Parameters
    ----------
    mask
        Boolean array of any shape of at least one axis (non-zero counts as set).
    """

    def __init__(self, mask: Any) -> None:
        values = np.asarray(mask.detach().cpu() if isinstance(mask, torch.Tensor) else mask)
        if values.ndim == 0:
            raise ValueError("the mask needs at least one axis")
        lines = (values != 0).reshape(-1, values.shape[-1])
        self.width = int(values.shape[-1])
        self.bits = np.packbits(lines, axis=1)
        self.starts = np.concatenate([[0], np.cumsum(lines.sum(axis=1), dtype=np.int64)])

    def __len__(self) -> int:
        """Return the number of set voxels."""
        return int(self.starts[-1])

    def __getitem__(self, position: int) -> np.int64:
        """Return the flat index of the ``position``-th set voxel (negative counts from the end)."""
        k = _position(position, len(self))
        line = int(np.searchsorted(self.starts, k, side="right")) - 1
        row = np.unpackbits(self.bits[line], count=self.width)
        column = int(np.flatnonzero(row)[k - int(self.starts[line])])
        return np.int64(line * self.width + column)

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray[Any]:
        """Return every index, as ``numpy.flatnonzero`` of the mask would."""
        lines = np.unpackbits(self.bits, axis=1, count=self.width)
        return np.flatnonzero(lines.ravel()).astype(dtype or np.int64)


class CyclicTail:
    """``head`` followed by ``tail`` repeated cyclically to ``repeats`` entries, uncopied.

    Position ``len(head) + j`` is ``tail[j % len(tail)]``, as in
    ``numpy.concatenate([head, numpy.resize(tail, repeats)])``.
    """

    def __init__(self, head: FlatIndices, tail: NDArray[np.int64], repeats: int) -> None:
        if len(tail) == 0 or repeats < 1:
            raise ValueError("the tail needs at least one index and one repeat")
        self.head = head
        self.tail = tail
        self.repeats = int(repeats)

    def __len__(self) -> int:
        """Return the length of the head and the repeated tail."""
        return len(self.head) + self.repeats

    def __getitem__(self, position: int) -> np.int64:
        """Return the flat index at ``position`` (negative counts from the end)."""
        k = _position(position, len(self))
        if k < len(self.head):
            return np.int64(self.head[k])
        return np.int64(self.tail[(k - len(self.head)) % len(self.tail)])

    def __array__(self, dtype: Any = None, copy: Any = None) -> NDArray[Any]:
        """Return every index."""
        head = np.asarray(self.head, dtype=np.int64)
        return np.concatenate([head, np.resize(self.tail, self.repeats)]).astype(dtype or np.int64)


def lesion_balanced_indices(label: Any, foreground: Any) -> NDArray[np.int64]:
    """Return ``foreground`` (flat mask-voxel indices) with every lesion equally represented.

    A lesion is a connected component (26 neighbours in 3-D, 8 in 2-D) of the
    foreground voxels. Each lesion's voxels are repeated cyclically up to the size
    of the largest lesion, so a voxel drawn uniformly from the result falls in each
    lesion equally often, and uniformly within it up to that rounding. Drawn from
    the plain foreground, a 30 mm nodule of 1,800 voxels would take 99 % of the
    positive patches of a scan that also holds a 5 mm nodule of 8. The components
    are labelled in the foreground's bounding box only, so the cost follows the
    lesions, not the volume.

    Parameters
    ----------
    label
        ``(channels, *spatial)`` mask (array or tensor); only its shape is used.
    foreground
        Flat indices into the spatial grid of the mask's voxels, as
        ``monai.transforms.utils.map_binary_to_indices`` gives them (it leaves a
        multi-channel mask's first, background channel out).
    """
    indices = _as_array(foreground)
    if len(indices) < 2:
        return indices
    spatial = tuple(int(size) for size in label.shape[1:])
    coordinates = np.unravel_index(indices, spatial)
    low = [int(axis.min()) for axis in coordinates]
    local = tuple(axis - start for axis, start in zip(coordinates, low, strict=True))
    inside = np.zeros([int(axis.max()) + 1 for axis in local], dtype=bool)
    inside[local] = True
    structure = ndimage.generate_binary_structure(inside.ndim, inside.ndim)
    components, count = ndimage.label(inside, structure=structure)
    if count < 2:
        return indices
    owner = components[local]
    largest = int(np.bincount(owner).max())
    return np.concatenate(
        [np.resize(indices[owner == lesion], largest) for lesion in range(1, count + 1)]
    )


def hard_negative_mix(background: FlatIndices, hard: Any, share: float) -> FlatIndices:
    """Return ``background`` with the ``hard`` indices taking ``share`` of it, uncopied.

    See :func:`with_hard_negatives`, which gives the same indices as one array.
    """
    chosen = _as_array(hard)
    if len(chosen) == 0 or share <= 0.0:
        return background
    if share >= 1.0 or len(background) == 0:
        return chosen
    repeats = max(1, round(len(background) * share / (1.0 - share)))
    return CyclicTail(background, chosen, repeats)


def with_hard_negatives(background: Any, hard: Any, share: float) -> NDArray[np.int64]:
    """Return ``background`` (flat voxel indices) with ``hard`` ones taking ``share`` of it.

    The hard-negative indices are repeated cyclically to ``share / (1 - share)`` times
    the background's length and appended, so a voxel drawn uniformly from the result
    is a hard negative with probability ``share`` (up to rounding), and any other
    background voxel otherwise. With no hard negative, or a share of 0, the
    background as it is; with a share of 1, the hard negatives alone.
    """
    return np.asarray(hard_negative_mix(_as_array(background), hard, share), dtype=np.int64)


def crop_centre_indices(
    label: Any,
    image: Any = None,
    image_threshold: float = 0.0,
    balance_lesions: bool = False,
    hard_negative_share: float = 0.0,
) -> tuple[FlatIndices, FlatIndices]:
    """Return the lesion and background indices a patch centre is drawn from.

    The lesion is the mask's first channel: its non-zero voxels (lesion-balanced
    with ``balance_lesions``, :func:`lesion_balanced_indices`). The background is
    every other voxel, or, with ``image``, every other voxel where a channel of the
    image is above ``image_threshold``: the lists of
    ``monai.transforms.utils.map_binary_to_indices`` for the first channel. With a
    ``hard_negative_share`` above 0 and a second mask channel marking hard negatives
    (outside the lesion), these take that share of the background
    (:func:`hard_negative_mix`). The background is a :class:`MaskIndices`.

    Parameters
    ----------
    label
        ``(channels, *spatial)`` mask.
    image
        ``(channels, *spatial)`` image, or ``None``.
    image_threshold
        See above.
    balance_lesions, hard_negative_share
        See above.
    """
    mask = torch.as_tensor(label).detach().cpu()
    lesion = (mask[0] != 0).numpy()
    if image is None:
        background = ~lesion
    else:
        tissue = (torch.as_tensor(image).detach().cpu() > image_threshold).any(0).numpy()
        background = tissue & ~lesion
    foreground: FlatIndices = np.flatnonzero(lesion.ravel())
    if balance_lesions:
        foreground = lesion_balanced_indices(mask, foreground)
    indices: FlatIndices = MaskIndices(background)
    if hard_negative_share > 0.0 and mask.shape[0] > 1:
        hard = np.flatnonzero(((mask[1] > 0).numpy() & ~(mask[0] > 0).numpy()).ravel())
        indices = hard_negative_mix(indices, hard, hard_negative_share)
    return foreground, indices


class CropCentreIndicesd(MapTransform):
    """Compute, once, the lists a cropper draws patch centres from (:func:`crop_centre_indices`).

    Deterministic, so a ``CacheDataset`` caches the lists with the image. They are
    left under :data:`FOREGROUND_INDICES_KEY` and :data:`BACKGROUND_INDICES_KEY`,
    which ``RandCropByPosNegLabeld`` pops when given them as ``fg_indices_key`` and
    ``bg_indices_key``.

    Parameters
    ----------
    label_key
        The mask (lesion first; hard negatives, if any, second).
    image_key
        The image whose channels above ``image_threshold`` bound the background, or
        ``None`` for every voxel outside the lesion.
    image_threshold, balance_lesions, hard_negative_share
        As :func:`crop_centre_indices`.
    """

    def __init__(
        self,
        label_key: str,
        image_key: str | None = None,
        image_threshold: float = 0.0,
        balance_lesions: bool = False,
        hard_negative_share: float = 0.0,
    ) -> None:
        keys: KeysCollection = [label_key] if image_key is None else [label_key, image_key]
        super().__init__(keys)
        if not 0.0 <= hard_negative_share <= 1.0:
            raise ValueError(f"hard_negative_share must be in [0, 1], got {hard_negative_share}")
        self.label_key = label_key
        self.image_key = image_key
        self.image_threshold = image_threshold
        self.balance_lesions = balance_lesions
        self.hard_negative_share = hard_negative_share

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return the item with the two lists added."""
        d = dict(data)
        foreground, background = crop_centre_indices(
            d[self.label_key],
            None if self.image_key is None else d[self.image_key],
            self.image_threshold,
            self.balance_lesions,
            self.hard_negative_share,
        )
        d[FOREGROUND_INDICES_KEY] = foreground
        d[BACKGROUND_INDICES_KEY] = background
        return d
