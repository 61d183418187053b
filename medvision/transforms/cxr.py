"""Chest X-ray transform chain: one radiograph to a fixed-size, percentile-normalised image.

Steps (dictionary transforms, image and optional mask together):

1. :class:`~medvision.transforms.loading.LoadStudyd`: the presentation values
   (Modality LUT, VOI LUT or window, MONOCHROME1 inverted), ``(1, rows, columns)``;
2. percentile normalisation: the 0.5th and 99.5th percentiles of the image map to
   0 and 1, clipped (removes the bit-depth, gain and window differences between
   DX and CR devices);
3. resize, keeping the aspect ratio, to fit :data:`INPUT_SIZE` (bilinear with
   anti-aliasing; masks nearest), then zero padding to exactly that size;
4. training only: a mild random affine (rotation up to 5 degrees, zoom up to 5 %)
   and mild intensity scaling and shifting. No flips: the heart, aortic knob and
   gastric bubble are on the patient's left, and a flipped film is a different
   (situs inversus) image.

Output: ``image`` float32 ``(1, 256, 256)``, values in ``[0, 1]`` (training may
leave that range slightly).
"""

from __future__ import annotations

import dataclasses

from monai.transforms.intensity.dictionary import ScaleIntensityRangePercentilesd
from monai.transforms.transform import Transform

from medvision.modality import Modality
from medvision.transforms.chain import (
    TransformChain,
    check_positive,
    fit_and_pad,
    planar_augmentation,
)
from medvision.transforms.loading import IMAGE_KEY

#: Network input size (rows, columns).
INPUT_SIZE: tuple[int, int] = (256, 256)
#: Input channels.
CHANNELS = 1
#: Masks of the phantoms' ground truth, in channel order.
MASK_NAMES: tuple[str, ...] = ("nodule", "pleural_effusion", "pneumothorax", "cardiomegaly")


@dataclasses.dataclass(frozen=True)
class CxrTransforms(TransformChain):
    """Parameters of the chest X-ray chain (see the module docstring).

    Parameters
    ----------
    input_size
        Output (rows, columns).
    lower_percentile, upper_percentile
        Percentiles mapped to 0 and 1.
    rotate_degrees, zoom_fraction
        Training: largest random rotation and relative zoom.
    intensity_fraction
        Training: largest random relative intensity scale and shift.
    augment_probability
        Training: probability of each random step.
    """

    name = "cxr"
    modality = Modality.CXR
    mask_names = MASK_NAMES

    input_size: tuple[int, int] = INPUT_SIZE
    lower_percentile: float = 0.5
    upper_percentile: float = 99.5
    rotate_degrees: float = 5.0
    zoom_fraction: float = 0.05
    intensity_fraction: float = 0.1
    augment_probability: float = 0.5

    def __post_init__(self) -> None:
        """Check the parameters."""
        check_positive("input_size", self.input_size)
        if not 0.0 <= self.lower_percentile < self.upper_percentile <= 100.0:
            raise ValueError(
                "percentiles must satisfy 0 <= lower < upper <= 100, got "
                f"{self.lower_percentile}, {self.upper_percentile}"
            )

    def steps(self, training: bool, keys: list[str], modes: list[str]) -> list[Transform]:
        """Return percentile normalisation, fit-resize and padding, then augmentation."""
        steps = [
            ScaleIntensityRangePercentilesd(
                IMAGE_KEY, self.lower_percentile, self.upper_percentile, 0.0, 1.0, clip=True
            ),
            *fit_and_pad(keys, modes, self.input_size),
        ]
        if training:
            steps += planar_augmentation(keys, modes, self)
        return steps


#: Compose the chest X-ray chain: ``build_transforms(training, chain=None, *, mask_key=None,
#: mask_names=None)``, see :meth:`~medvision.transforms.chain.TransformChain.build`.
build_transforms = CxrTransforms.build_default
