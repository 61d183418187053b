"""Colour fundus transform chain: crop to the field of view, resize, normalise colour.

Steps (dictionary transforms, image and optional mask together):

1. :class:`~medvision.transforms.loading.LoadStudyd`: RGB values 0-255 as
   ``(3, rows, columns)`` (no VOI: colour photographs have none);
2. field-of-view crop: ``CropForegroundd`` to the bounding box of the circular
   field of view, found by thresholding the channel mean at 10 % of its 99th
   percentile and keeping the largest region
   (:class:`~medvision.transforms.spatial.ForegroundSelector`); cameras differ in
   how much black surround they record, and the crop removes that difference;
3. resize, keeping the aspect ratio, to fit :data:`INPUT_SIZE`, then zero padding;
4. training only: left-right flips (a left eye is the mirror image of a right
   eye), rotations up to 15 degrees, and a random gamma (contrast);
5. per-channel colour normalisation inside the field of view
   (:class:`~medvision.transforms.intensity.FieldOfViewNormalized`): each channel
   to zero mean and unit deviation over the field of view, 0 outside; this
   removes the camera's colour cast and exposure and the patient's fundus
   pigmentation level while keeping lesion contrast;
6. training only: mild brightness (shift) and contrast (scale) changes.

Output: ``image`` float32 ``(3, 256, 256)``; per channel mean 0 and standard
deviation 1 inside the field of view, 0 outside.
"""

from __future__ import annotations

import dataclasses
import math

from monai.transforms.croppad.dictionary import CropForegroundd
from monai.transforms.intensity.dictionary import RandAdjustContrastd
from monai.transforms.spatial.dictionary import RandFlipd, RandRotated
from monai.transforms.transform import Transform

from medvision.modality import Modality
from medvision.transforms.chain import (
    TransformChain,
    check_positive,
    fit_and_pad,
    intensity_jitter,
)
from medvision.transforms.intensity import FieldOfViewNormalized
from medvision.transforms.loading import IMAGE_KEY
from medvision.transforms.spatial import ForegroundSelector

#: Network input size (rows, columns).
INPUT_SIZE: tuple[int, int] = (256, 256)
#: Input channels (RGB).
CHANNELS = 3
#: Masks of the phantoms' ground truth, in channel order.
MASK_NAMES: tuple[str, ...] = ("microaneurysm", "haemorrhage", "hard_exudate", "neovascularisation")


@dataclasses.dataclass(frozen=True)
class FundusTransforms(TransformChain):
    """Parameters of the fundus chain (see the module docstring).

    Parameters
    ----------
    input_size
        Output (rows, columns).
    field_of_view_fraction
        Field-of-view threshold, a fraction of the 99th percentile of the channel mean.
    rotate_degrees
        Training: largest random rotation.
    gamma_range
        Training: range of the random gamma (contrast curve).
    intensity_fraction
        Training: largest random shift and relative scale after normalisation.
    augment_probability
        Training: probability of each random step.
    """

    name = "fundus"
    modality = Modality.FUNDUS
    mask_names = MASK_NAMES

    input_size: tuple[int, int] = INPUT_SIZE
    field_of_view_fraction: float = 0.1
    rotate_degrees: float = 15.0
    gamma_range: tuple[float, float] = (0.8, 1.25)
    intensity_fraction: float = 0.1
    augment_probability: float = 0.5

    def __post_init__(self) -> None:
        """Check the parameters."""
        check_positive("input_size", self.input_size)
        check_positive("gamma_range", self.gamma_range)
        if not 0.0 < self.field_of_view_fraction < 1.0:
            raise ValueError(
                f"field_of_view_fraction must be in (0, 1), got {self.field_of_view_fraction}"
            )

    def steps(self, training: bool, keys: list[str], modes: list[str]) -> list[Transform]:
        """Return the field-of-view crop, fit-resize, augmentation and normalisation."""
        p = self.augment_probability
        selector = ForegroundSelector(self.field_of_view_fraction)
        steps = [
            CropForegroundd(keys, IMAGE_KEY, select_fn=selector),
            *fit_and_pad(keys, modes, self.input_size),
        ]
        if training:
            steps += [
                RandFlipd(keys, prob=0.5, spatial_axis=1),
                RandRotated(
                    keys,
                    range_x=math.radians(self.rotate_degrees),
                    prob=p,
                    mode=modes,
                    padding_mode="zeros",
                ),
                RandAdjustContrastd(IMAGE_KEY, prob=p, gamma=self.gamma_range),
            ]
        steps.append(FieldOfViewNormalized(IMAGE_KEY, self.field_of_view_fraction))
        if training:
            steps += intensity_jitter(self.intensity_fraction, p)
        return steps


#: Compose the fundus chain: ``build_transforms(training, chain=None, *, mask_key=None,
#: mask_names=None)``, see :meth:`~medvision.transforms.chain.TransformChain.build`.
build_transforms = FundusTransforms.build_default
