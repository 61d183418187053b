"""What every modality's transform chain shares.

A chain is a frozen dataclass of its parameters: :meth:`TransformChain.build`
composes the MONAI dictionary transforms once per model, and
:meth:`TransformChain.describe` gives the JSON-serialisable name, version and
parameters the model registry stores with a model. :func:`to_original_grid` maps
a map in model-input space (a heatmap, a predicted mask) back onto the source
image's pixel grid with MONAI's ``Invertd``, which replays the inverse of every
invertible step the image went through (MONAI "Invertible transforms" and
``monai.transforms.Invertd`` documentation).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence
from enum import Enum, StrEnum
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import torch
from monai.config.type_definitions import KeysCollection
from monai.data.meta_tensor import MetaTensor
from monai.transforms.compose import Compose
from monai.transforms.croppad.dictionary import (
    RandCropByPosNegLabeld,
    RandSpatialCropd,
    SpatialPadd,
)
from monai.transforms.intensity.dictionary import RandScaleIntensityd, RandShiftIntensityd
from monai.transforms.post.dictionary import Invertd
from monai.transforms.spatial.dictionary import RandAffined, RandFlipd, RandRotate90d
from monai.transforms.transform import MapTransform, Transform
from monai.transforms.utility.dictionary import EnsureTyped
from numpy.typing import NDArray

from medvision.choices import parse_choice
from medvision.modality import Modality
from medvision.transforms.crop_centres import (
    BACKGROUND_INDICES_KEY,
    FOREGROUND_INDICES_KEY,
    CropCentreIndicesd,
    crop_centre_indices,
)
from medvision.transforms.loading import IMAGE_KEY, LoadMasksd, LoadStudyd, MaskName
from medvision.transforms.spatial import ResizeToFitd

#: Interpolation of images in the spatial steps (masks always use nearest neighbour).
IMAGE_INTERPOLATION = "bilinear"
MASK_INTERPOLATION = "nearest"


class MapKind(StrEnum):
    """How a map's values are carried back to the original grid.

    ``label``: nearest neighbour (masks and label maps keep their values).
    ``continuous``: the chain's own interpolation (heatmaps, probabilities).
    """

    LABEL = "label"
    CONTINUOUS = "continuous"


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


@dataclasses.dataclass(frozen=True)
class TransformChain:
    """Base of the modality chains: parameters as fields, a name and a version.

    Subclasses set :attr:`name` (the modality), :attr:`modality` and
    :attr:`mask_names`, bump :attr:`version` when their steps change, and
    implement :meth:`steps`.
    """

    name: ClassVar[str] = ""
    modality: ClassVar[Modality]
    version: ClassVar[int] = 1
    #: Mask names (ground-truth NPZ) loaded by default when a mask key is given.
    mask_names: ClassVar[tuple[str, ...]] = ()

    def steps(self, training: bool, keys: list[str], modes: list[str]) -> list[Transform]:
        """Return the modality's steps after loading (subclasses implement it).

        ``keys`` are moved together with the interpolation ``modes``: the image,
        then the mask when there is one.
        """
        raise NotImplementedError

    def build(
        self,
        training: bool,
        *,
        mask_key: str | None = None,
        mask_names: Sequence[MaskName] | None = None,
    ) -> Compose:
        """Compose the chain once: load the study, the modality's steps, float32 output.

        Parameters
        ----------
        training
            Add the random augmentation (and, for CT, patch sampling).
        mask_key
            Also load the ground-truth masks (item key ``masks``) into this key;
            they get the same spatial steps, with nearest-neighbour interpolation.
        mask_names
            Which masks, one channel each (default :attr:`mask_names`); a tuple of
            names is one channel, their union.
        """
        keys, modes = spatial_keys(mask_key)
        steps: list[Transform] = [LoadStudyd(self.modality)]
        if mask_key is not None:
            names = self.mask_names if mask_names is None else tuple(mask_names)
            steps.append(LoadMasksd(names, mask_key=mask_key))
        steps += self.steps(training, keys, modes)
        steps.append(EnsureTyped(keys, dtype=torch.float32))
        # Two levels: a multi-view study is a list of views, and a view cut into
        # training patches a list of patches.
        return Compose(steps, map_items=2)

    @classmethod
    def build_default(
        cls,
        training: bool,
        chain: Self | None = None,
        *,
        mask_key: str | None = None,
        mask_names: Sequence[MaskName] | None = None,
    ) -> Compose:
        """Compose the chain with ``chain``'s parameters (the defaults when None).

        Each modality module exposes this as ``build_transforms``; the other
        arguments are :meth:`build`'s.
        """
        return (chain or cls()).build(training, mask_key=mask_key, mask_names=mask_names)

    def describe(self) -> dict[str, Any]:
        """Return the chain's name, version and parameters, JSON-serialisable."""
        return {
            "name": self.name,
            "version": self.version,
            "parameters": _plain(dataclasses.asdict(self)),
        }

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> Self:
        """Rebuild a chain from :meth:`describe`'s ``parameters`` (lists become tuples).

        Raises
        ------
        ValueError
            For a parameter the chain does not have, or a value it refuses.
        """
        known = [field.name for field in dataclasses.fields(cls)]
        unknown = sorted(set(parameters) - set(known))
        if unknown:
            raise ValueError(
                f"{cls.name} chain has no parameter(s) {', '.join(unknown)}; "
                f"it has {', '.join(known)}"
            )
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in parameters.items()})


def spatial_keys(mask_key: str | None) -> tuple[list[str], list[str]]:
    """Return the keys spatial steps move together and their interpolation modes."""
    if mask_key is None:
        return [IMAGE_KEY], [IMAGE_INTERPOLATION]
    return [IMAGE_KEY, mask_key], [IMAGE_INTERPOLATION, MASK_INTERPOLATION]


def fit_and_pad(
    keys: list[str], modes: list[str], size: Sequence[int], pad_method: str = "symmetric"
) -> list[Transform]:
    """Return the steps that resize to fit ``size`` (aspect kept) and zero-pad to it.

    Images are resized with anti-aliasing (a Gaussian before down-sampling),
    masks with nearest neighbour and none. ``pad_method`` is MONAI's:
    ``symmetric`` centres the image, ``end`` keeps its first row and column.
    """
    anti_aliasing = [mode != MASK_INTERPOLATION for mode in modes]
    return [
        ResizeToFitd(keys, size, mode=modes, anti_aliasing=anti_aliasing),
        SpatialPadd(keys, size, method=pad_method),
    ]


def random_affine(
    keys: list[str], modes: list[str], probability: float, rotate_degrees: float, zoom: float
) -> Transform:
    """Return a random in-plane rotation (up to ``rotate_degrees``) and zoom (up to ``zoom``)."""
    return RandAffined(
        keys,
        prob=probability,
        rotate_range=math.radians(rotate_degrees),
        scale_range=zoom,
        mode=modes,
        padding_mode="zeros",
    )


def intensity_jitter(fraction: float, probability: float) -> list[Transform]:
    """Return a random relative intensity scale and a random shift, each up to ``fraction``."""
    return [
        RandScaleIntensityd(IMAGE_KEY, factors=fraction, prob=probability),
        RandShiftIntensityd(IMAGE_KEY, offsets=fraction, prob=probability),
    ]


def positive_region(roi_size: Sequence[int]) -> tuple[int, ...]:
    """Return the region cut around a mask voxel, from which a training patch is cut.

    A quarter of the patch more on each side, so the mask voxel lands anywhere in
    the middle half of the patch along each axis.
    """
    return tuple(int(size) + 2 * (int(size) // 4) for size in roi_size)


class RandCropByLesiond(RandCropByPosNegLabeld):
    """``RandCropByPosNegLabeld`` whose positive centres pick each lesion equally often.

    The positive centre is drawn from
    :func:`~medvision.transforms.crop_centres.lesion_balanced_indices` instead of
    from every mask voxel alike (``balance_lesions``). With a
    ``hard_negative_share``, the label has a second channel marking *hard
    negatives* (places where a model made false positives); a share of the negative
    centres is then drawn from its voxels
    (:func:`~medvision.transforms.crop_centres.with_hard_negatives`), the rest as
    ``RandCropByPosNegLabeld`` draws them from the first channel. The crop and the
    random state are ``RandCropByPosNegLabeld``'s.
    """

    def __init__(
        self,
        *args: Any,
        balance_lesions: bool = True,
        hard_negative_share: float = 0.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not 0.0 <= hard_negative_share <= 1.0:
            raise ValueError(f"hard_negative_share must be in [0, 1], got {hard_negative_share}")
        self.balance_lesions = balance_lesions
        self.hard_negative_share = hard_negative_share

    def randomize(
        self,
        label: torch.Tensor | None = None,
        fg_indices: Any = None,
        bg_indices: Any = None,
        image: torch.Tensor | None = None,
    ) -> None:
        """Draw centres from the given indices, else from those computed as configured.

        Given indices (:class:`~medvision.transforms.crop_centres.CropCentreIndicesd`,
        through ``fg_indices_key`` and ``bg_indices_key``) are used as they are; they
        are the ones computed here (:func:`~medvision.transforms.crop_centres.crop_centre_indices`).
        """
        if label is not None and fg_indices is None and bg_indices is None:
            fg_indices, bg_indices = crop_centre_indices(
                label,
                image,
                self.cropper.image_threshold,
                self.balance_lesions,
                self.hard_negative_share,
            )
        super().randomize(label, fg_indices, bg_indices, image)


class FirstChannelsd(MapTransform):
    """Keep the first ``count`` channels of each key (a helper channel dropped after use)."""

    def __init__(self, keys: KeysCollection, count: int = 1) -> None:
        super().__init__(keys)
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        self.count = count

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Return the item with each key cut to its first channels."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = d[key][: self.count]
        return d


def lesion_patches(
    keys: list[str],
    roi_size: Sequence[int],
    positive_fraction: float,
    samples: int,
    foreground_threshold: float | None = None,
    balance_lesions: bool = False,
    cached_dtypes: tuple[torch.dtype, torch.dtype] | None = None,
    hard_negative_share: float = 0.0,
) -> list[Transform]:
    """Return the steps that cut ``samples`` training patches, some around a lesion.

    A patch centred on a mask voxel of a small lesion always has the lesion in
    its middle, and a network learns "the centre" instead of "a lesion" (measured
    on CT: the probability at a nodule fell from 0.4 to 0 when the nodule was moved
    4 voxels off the patch centre). So ``RandCropByPosNegLabeld`` cuts a region
    half as large again (:func:`positive_region`) around a mask voxel (a share
    ``positive_fraction`` of the samples) or around a voxel outside the mask, and
    the patch is cut from that region at a random place. An image without a
    lesion gives only the second kind. The voxel lists the centres are drawn from are
    computed once per image, before the first random step
    (:class:`~medvision.transforms.crop_centres.CropCentreIndicesd`), so a
    ``CacheDataset`` keeps them with the image instead of every call recomputing them.

    Parameters
    ----------
    keys
        Image key, then mask key (the mask drives the sampling).
    roi_size
        Patch size.
    positive_fraction
        Share of patches cut around a mask voxel.
    samples
        Patches per image; the item becomes a list of that many.
    foreground_threshold
        When given, the patches not cut around a lesion are centred only where the
        image is above it (mammography: the breast, not the air or padding around
        it; CT: tissue denser than aerated lung).
    balance_lesions
        Cut the patches around a lesion around each lesion of the image equally
        often (:class:`RandCropByLesiond`), not around each mask voxel alike.
    cached_dtypes
        When given, ``(image dtype, mask dtype)`` the whole image and mask are held
        in before the patches are cut (the steps up to the first random one are what
        a ``CacheDataset`` keeps in memory), and each patch is made float32 again
        once cut. CT passes ``(float16, uint8)``: a scan then takes 5 bytes a voxel
        (with the dot channel) instead of 12, at a rounding of at most 2**-11 of a
        value in ``[0, 1]`` (under 1 HU of the 1,400 HU window; the phantoms' noise
        is 10-40 HU). ``None`` (default): kept as they are.
    hard_negative_share
        When above 0, the mask's second channel marks hard negatives (a model's false
        positives in this image) and this share of the patches not cut around a
        lesion is cut around one of its voxels (:class:`RandCropByLesiond`); the
        channel is dropped once the patches are cut. An image without hard negatives
        gives the plain negative patches.
    """
    region = positive_region(roi_size)
    image_key = None if foreground_threshold is None else IMAGE_KEY
    image_threshold = 0.0 if foreground_threshold is None else foreground_threshold
    options: dict[str, Any] = {}
    if balance_lesions or hard_negative_share > 0.0:
        cropper: type[RandCropByPosNegLabeld] = RandCropByLesiond
        options = {"balance_lesions": balance_lesions, "hard_negative_share": hard_negative_share}
    else:
        cropper = RandCropByPosNegLabeld
    # The centres' lists, computed once per image in the cached, deterministic part.
    centres = CropCentreIndicesd(
        keys[1], image_key, image_threshold, balance_lesions, hard_negative_share
    )
    dropped: list[Transform] = []
    if hard_negative_share > 0.0:
        dropped = [FirstChannelsd(keys[1], 1)]
    held: list[Transform] = []
    restored: list[Transform] = []
    if cached_dtypes is not None:
        held = [EnsureTyped(keys, dtype=list(cached_dtypes), track_meta=True)]
        restored = [EnsureTyped(keys, dtype=torch.float32, track_meta=True)]
    return [
        *held,
        SpatialPadd(keys, region),
        centres,
        cropper(
            keys,
            label_key=keys[1],
            spatial_size=region,
            pos=positive_fraction,
            neg=1.0 - positive_fraction,
            num_samples=samples,
            image_key=image_key,
            image_threshold=image_threshold,
            fg_indices_key=FOREGROUND_INDICES_KEY,
            bg_indices_key=BACKGROUND_INDICES_KEY,
            **options,
        ),
        RandSpatialCropd(keys, roi_size, random_size=False),
        *dropped,
        *restored,
    ]


def patch_symmetries(keys: list[str], patch_size: Sequence[int]) -> list[Transform]:
    """Return random flips along each axis of a patch, and quarter turns in its first plane.

    Each flip has probability 1/2; where the patch is as long along its first two
    axes, the turn in their plane is 0, 1, 2 or 3 quarter turns with equal
    probability. So a square 2-D patch takes each of its eight symmetries (the
    dihedral group of the square) equally often, and a 3-D patch of the CT chain
    (RAS: the first plane is the axial one) each of its sixteen: the axial plane's
    eight, each with or without the head-foot flip.
    """
    steps: list[Transform] = [
        RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in range(len(patch_size))
    ]
    if int(patch_size[0]) == int(patch_size[1]):
        steps.append(RandRotate90d(keys, prob=0.75, max_k=3, spatial_axes=(0, 1)))
    return steps


class PlanarAugmentation(Protocol):
    """The augmentation parameters of a 2-D chain (rotation, zoom, intensity)."""

    @property
    def rotate_degrees(self) -> float:
        """Largest random rotation in degrees."""

    @property
    def zoom_fraction(self) -> float:
        """Largest random relative zoom."""

    @property
    def intensity_fraction(self) -> float:
        """Largest random relative intensity scale and shift."""

    @property
    def augment_probability(self) -> float:
        """Probability of each random step."""


def planar_augmentation(
    keys: list[str], modes: list[str], parameters: PlanarAugmentation
) -> list[Transform]:
    """Return the training-time random affine and intensity jitter of a 2-D chain."""
    p = parameters.augment_probability
    return [
        random_affine(keys, modes, p, parameters.rotate_degrees, parameters.zoom_fraction),
        *intensity_jitter(parameters.intensity_fraction, p),
    ]


def check_positive(name: str, values: Sequence[float]) -> None:
    """Refuse a parameter with a value that is not positive.

    Raises
    ------
    ValueError
        Naming the parameter.
    """
    if any(not v > 0 for v in values):
        raise ValueError(f"{name} must be positive, got {tuple(values)}")


def to_original_grid(
    values: torch.Tensor | NDArray[Any],
    item: Mapping[str, Any],
    transforms: Compose,
    kind: MapKind | str = MapKind.CONTINUOUS,
    image_key: str = IMAGE_KEY,
) -> NDArray[np.float32]:
    """Map a model-input-space map back onto the source image's pixel grid.

    Undoes, in reverse order, every invertible step ``item[image_key]`` went
    through in ``transforms`` (resize and padding, crop, laterality flip; for CT
    spacing and orientation, resampling back to the DICOM grid). The result is on
    the grid :class:`~medvision.transforms.loading.LoadStudyd` loaded: ``(rows,
    columns)`` of the DICOM image, or CT ``(slices, rows, columns)`` in the order
    of ``meta["sop_instance_uids"]``.

    Parameters
    ----------
    values
        ``(channels, *spatial)`` or ``(*spatial)``, with the spatial shape of
        ``item[image_key]``.
    item
        The transformed item (one view for mammography) whose image the map belongs to.
    transforms
        The chain that produced ``item`` (built with ``training=False``).
    kind
        How values are interpolated (:class:`MapKind`).
    image_key
        Key of the transformed image in ``item``.

    Returns
    -------
    numpy.ndarray
        ``(channels, *original spatial shape)``, float32.

    Raises
    ------
    ValueError
        If the map's spatial shape differs from the transformed image's, or the
        result's from the source image's (``transforms`` did not produce ``item``).
    """
    image = item[image_key]
    if not isinstance(image, MetaTensor):
        raise ValueError(f"item['{image_key}'] is not a MetaTensor: it carries no trace to invert")
    raw = values.as_tensor() if isinstance(values, MetaTensor) else values
    tensor = torch.as_tensor(raw, dtype=torch.float32).detach().cpu()
    spatial = tuple(image.shape[1:])
    if tuple(tensor.shape) == spatial:
        tensor = tensor[None]
    if tuple(tensor.shape[1:]) != spatial:
        raise ValueError(f"map of shape {tuple(tensor.shape)} does not fit the image's {spatial}")
    nearest = parse_choice(MapKind, kind, "map kind") == MapKind.LABEL
    inverter = Invertd(
        keys="map", transform=transforms, orig_keys=image_key, nearest_interp=nearest
    )
    # A fresh MetaTensor: Invertd then replays the image's trace, not one of the map's own.
    inverted = inverter({image_key: image, "map": MetaTensor(tensor)})["map"]
    result = np.asarray(torch.as_tensor(inverted).detach().cpu(), dtype=np.float32)
    original = tuple(int(s) for s in image.meta.get("original_shape", result.shape[1:]))
    if tuple(result.shape[1:]) != original:
        raise ValueError(
            f"mapping back gave shape {tuple(result.shape[1:])}, the source image is {original}: "
            "were the transforms the ones that produced the item?"
        )
    return result
