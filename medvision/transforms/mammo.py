"""Mammography transform chain: per view, canonical laterality, breast crop, fixed size.

A study becomes one item per view, ordered R-CC, L-CC, R-MLO, L-MLO
(:class:`~medvision.transforms.loading.LoadStudyd`); MONAI's ``Compose`` applies
the steps below to each view, and a ``DataLoader`` with MONAI's
``list_data_collate`` turns a study into a batch of four. Each view's image
``meta`` keeps ``laterality`` and ``view_position``, so per-view scores can be
aggregated per breast, and records the flip.

Steps (image and optional mask together):

1. presentation values (Modality LUT, the file's VOI LUT or window, MONOCHROME1
   inverted), ``(1, rows, columns)`` in ``[0, 1]``;
2. canonical laterality: right-breast views are flipped left-right so every
   chest wall is on the image's left
   (:class:`~medvision.transforms.spatial.CanonicalLateralityd`);
3. breast crop: ``CropForegroundd`` to the bounding box of the largest region
   brighter than 10 % of the 99th percentile (the breast; labels and markers
   are smaller regions), with a small margin;
4. resize, keeping the aspect ratio, to fit :data:`INPUT_SIZE` (256 rows x 192
   columns), then zero padding at the end (bottom and right) so the chest wall
   stays on the left edge;
5. intensity: the minimum and the 99.5th percentile map to 0 and 1, clipped;
6. training with a ``patch_size`` and a lesion mask only: the view becomes
   ``patches_per_view`` patches of that size, a share ``positive_fraction`` of
   them cut around the malignant lesion (at a random place, so the lesion is not
   always in the middle) and the others anywhere in the breast
   (:func:`~medvision.transforms.chain.lesion_patches`), or, with
   ``hard_negatives``, that share of them around a benign lesion. A lesion covers
   well under 1 % of a view; patches show the network many more of them per CPU
   second, and the fully convolutional network still scores whole views;
7. training only: a mild random affine (rotation up to 10 degrees, zoom up to
   10 %) and mild intensity scaling and shifting. No flips of whole views:
   laterality is canonical, and an upside-down MLO view puts the pectoral muscle
   at the bottom. With ``patch_symmetries``, patches (not whole views) are flipped
   along each axis and square ones turned by a multiple of 90 degrees at random:
   a 128-pixel patch of tissue shows a lesion whichever way up it lies, and the
   eight symmetries of a square give the network eight looks at each training
   lesion.

Output per view: ``image`` float32 ``(1, 256, 192)`` in ``[0, 1]`` (a list of
patches in training with a ``patch_size``).
"""

from __future__ import annotations

import dataclasses

from monai.transforms.croppad.dictionary import CropForegroundd
from monai.transforms.intensity.dictionary import ScaleIntensityRangePercentilesd
from monai.transforms.transform import Transform

from medvision.modality import Modality
from medvision.transforms.chain import (
    TransformChain,
    check_positive,
    fit_and_pad,
    lesion_patches,
    patch_symmetries,
    planar_augmentation,
)
from medvision.transforms.loading import IMAGE_KEY, VIEW_ORDER
from medvision.transforms.spatial import CanonicalLateralityd, ForegroundSelector

#: Network input size per view (rows, columns).
INPUT_SIZE: tuple[int, int] = (256, 192)
#: Input channels.
CHANNELS = 1
#: Views of a screening study, in item order (ImageLaterality, ViewPosition).
VIEWS: tuple[tuple[str, str], ...] = VIEW_ORDER
#: The phantoms' mask of a view's benign lesions (circumscribed masses, coarse
#: calcifications).
BENIGN_MASK = "benign"
#: Masks of the phantoms' ground truth, in channel order.
MASK_NAMES: tuple[str, ...] = ("malignancy", BENIGN_MASK)


@dataclasses.dataclass(frozen=True)
class MammoTransforms(TransformChain):
    """Parameters of the mammography chain (see the module docstring).

    Parameters
    ----------
    input_size
        Output (rows, columns) per view.
    breast_fraction
        Breast threshold, a fraction of the 99th percentile.
    crop_margin
        Pixels kept around the breast's bounding box.
    upper_percentile
        Percentile mapped to 1 (the minimum maps to 0).
    rotate_degrees, zoom_fraction
        Training: largest random rotation and relative zoom.
    intensity_fraction
        Training: largest random relative intensity scale and shift.
    augment_probability
        Training: probability of each random step.
    patch_size
        Training with a lesion mask: cut each view into patches of this (rows,
        columns) instead of showing it whole; ``None`` (default) shows whole views.
    patches_per_view
        Training with a ``patch_size``: patches cut from each view per epoch.
    positive_fraction
        Training with a ``patch_size``: share of a lesion view's patches cut around
        its lesion.
    foreground_threshold
        Training with a ``patch_size``: patches are centred only where the scaled
        image is above this (the breast, not the air or padding).
    patch_symmetries
        Training with a ``patch_size``: flip each patch along each axis at random
        and turn a square one by a random multiple of 90 degrees.
    hard_negatives
        Training with a ``patch_size``: the share of the patches not cut around a
        malignant lesion that are cut around one of the view's benign lesions
        (circumscribed masses, coarse calcifications: the look-alikes a reader must
        not flag), the mask :data:`BENIGN_MASK`, loaded as a second mask channel
        (:meth:`training_mask_names`) and dropped once the patches are cut; a view
        without a benign lesion gives the plain patches. 0 (default): none.
    """

    name = "mammo"
    modality = Modality.MAMMO
    mask_names = MASK_NAMES

    input_size: tuple[int, int] = INPUT_SIZE
    breast_fraction: float = 0.1
    crop_margin: int = 4
    upper_percentile: float = 99.5
    rotate_degrees: float = 10.0
    zoom_fraction: float = 0.1
    intensity_fraction: float = 0.1
    augment_probability: float = 0.5
    patch_size: tuple[int, int] | None = None
    patches_per_view: int = 4
    positive_fraction: float = 0.5
    foreground_threshold: float = 0.1
    patch_symmetries: bool = False
    hard_negatives: float = 0.0

    def training_mask_names(self, lesion: str) -> tuple[str, ...]:
        """Return the masks a training view loads: ``lesion``, then the benign one's."""
        return (lesion, BENIGN_MASK) if self.hard_negatives > 0.0 else (lesion,)

    def __post_init__(self) -> None:
        """Check the parameters."""
        check_positive("input_size", self.input_size)
        check_positive("patches_per_view", [self.patches_per_view])
        if self.patch_size is not None:
            check_positive("patch_size", self.patch_size)
            if len(self.patch_size) != 2 or any(
                p > s for p, s in zip(self.patch_size, self.input_size, strict=True)
            ):
                raise ValueError(
                    f"patch_size must be two sizes (rows, columns) no larger than the input "
                    f"size {tuple(self.input_size)}, got {tuple(self.patch_size)}"
                )
        if not 0.0 <= self.positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {self.positive_fraction}")
        if not 0.0 <= self.hard_negatives <= 1.0:
            raise ValueError(f"hard_negatives must be in [0, 1], got {self.hard_negatives}")
        if not 0.0 < self.breast_fraction < 1.0 or self.crop_margin < 0:
            raise ValueError(
                "breast_fraction must be in (0, 1) and crop_margin 0 or more, got "
                f"{self.breast_fraction}, {self.crop_margin}"
            )

    def steps(self, training: bool, keys: list[str], modes: list[str]) -> list[Transform]:
        """Return the laterality flip, breast crop, fit-resize, scaling and augmentation."""
        selector = ForegroundSelector(self.breast_fraction)
        steps = [
            CanonicalLateralityd(keys),
            CropForegroundd(
                keys, IMAGE_KEY, select_fn=selector, margin=self.crop_margin, allow_smaller=True
            ),
            *fit_and_pad(keys, modes, self.input_size, pad_method="end"),
            ScaleIntensityRangePercentilesd(
                IMAGE_KEY, 0.0, self.upper_percentile, 0.0, 1.0, clip=True
            ),
        ]
        if training and self.patch_size is not None and len(keys) > 1:
            steps += lesion_patches(
                keys,
                self.patch_size,
                self.positive_fraction,
                self.patches_per_view,
                foreground_threshold=self.foreground_threshold,
                hard_negative_share=self.hard_negatives,
            )
            if self.patch_symmetries:
                steps += patch_symmetries(keys, self.patch_size)
        if training:
            steps += planar_augmentation(keys, modes, self)
        return steps


#: Compose the mammography chain (a study item becomes a list of one item per view):
#: ``build_transforms(training, chain=None, *, mask_key=None, mask_names=None)``, see
#: :meth:`~medvision.transforms.chain.TransformChain.build`.
build_transforms = MammoTransforms.build_default
