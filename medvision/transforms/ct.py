"""Chest CT transform chain: HU window, RAS orientation, fixed spacing, patch sampling.

Steps (dictionary transforms, image and optional mask together):

1. :class:`~medvision.transforms.loading.LoadStudyd`: the series in HU as
   ``(1, slices, rows, columns)`` with its RAS affine from the DICOM geometry;
2. ``Orientationd`` to RAS: array axes 0, 1 and 2 run towards the patient's right,
   anterior and superior (MONAI axis codes);
3. ``Spacingd`` to :data:`SPACING_MM` (trilinear for the image, nearest for masks);
4. HU window: clip to the named window (:class:`CtWindow`, default
   ``lung_nodule``, [-1000, 400] HU) and scale it to ``[0, 1]``;
   with ``dot_enhancement``, the Hessian dot filter of the windowed image
   (:mod:`medvision.transforms.enhancement`; scales :data:`DOT_SIGMAS_MM`, in units
   of :data:`DOT_UNIT_HU`) becomes a second channel: blobs such as nodules light
   up, tubes such as vessels do not;
5. training only: sample patches of :data:`ROI_SIZE` — with a mask key, a
   region half as large again is cut around a nodule voxel (two thirds of the
   samples; each nodule of the scan equally often, then a voxel of it:
   :class:`~medvision.transforms.chain.RandCropByLesiond`) or around another
   voxel, and the patch is cut from that region at a random place
   (:func:`~medvision.transforms.chain.lesion_patches`), so a nodule is not
   always at the patch centre; the other patches are centred only on voxels denser
   than aerated lung (:data:`NEGATIVE_MIN_HU`: vessels, airway walls, hila,
   mediastinum, chest wall), where the look-alikes of a nodule are, not in the air
   around the patient; without a mask, ``RandSpatialCropSamplesd`` — then, with
   ``patch_symmetries``, random flips and axial quarter turns of each patch; with
   ``lesion_contrast``, the nodules of a patch faded to a random share of their
   contrast (:class:`~medvision.transforms.intensity.RandLesionContrastd`); and mild
   intensity scaling and shifting (of every channel alike). Each training item
   becomes a list of patches. With a mask, the whole scan is held as
   :data:`CACHED_DTYPES` (half-precision image, one-byte mask) until its patches are
   cut, since that is what a training ``CacheDataset`` keeps in memory; the
   patches are float32 again.

Inference runs on the whole resampled volume with :func:`sliding_window_inferer`.

Why 2 mm isotropic: the phantom devices acquire 2.2-2.4 mm pixels and 2.5-3 mm
slices, so 2 mm is finer than every native axis (resampling never discards
detail), makes voxels isotropic for 3-D convolutions, keeps the smallest
nodules (4 mm) two voxels wide, and keeps a 350-384 mm x 160 mm phantom volume at
about 176-192 x 176-192 x 80 voxels, cheap on a CPU. (Real thin-slice CT at 0.7 mm is
down-sampled to the same grid; pick 1 mm there if the model needs it.)

Output: ``image`` float32 ``(1, X, Y, Z)`` in ``[0, 1]``, RAS, 2 mm voxels
(``(2, X, Y, Z)`` with ``dot_enhancement``: the dot filter in ``[0, DOT_CEILING]``
second).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from enum import StrEnum

import torch
from monai.inferers.inferer import SlidingWindowInferer
from monai.transforms.croppad.dictionary import RandSpatialCropSamplesd, SpatialPadd
from monai.transforms.intensity.dictionary import ScaleIntensityRanged
from monai.transforms.spatial.dictionary import Orientationd, Spacingd
from monai.transforms.transform import Transform

from medvision.choices import parse_choice
from medvision.modality import Modality
from medvision.transforms.chain import (
    TransformChain,
    check_positive,
    intensity_jitter,
    lesion_patches,
    patch_symmetries,
)
from medvision.transforms.enhancement import DotEnhancementd
from medvision.transforms.intensity import RandLesionContrastd, is_share_range
from medvision.transforms.loading import IMAGE_KEY

#: Target voxel spacing in mm (RAS axes), see the module docstring.
SPACING_MM: tuple[float, float, float] = (2.0, 2.0, 2.0)
#: Patch size (voxels, RAS axes) for training and sliding-window inference: 64 mm cubes, about
#: twice the largest phantom nodule (30 mm). Small patches give many optimiser steps per CPU
#: minute; a 96 x 96 x 64 patch costs about 8 times a 32-voxel cube per step.
ROI_SIZE: tuple[int, int, int] = (32, 32, 32)
#: Voxels the sliding-window inferer runs through the network at once (as many windows as fit).
WINDOW_BATCH_VOXELS = 2 * 96 * 96 * 64
#: How a training scan and its mask are held while patches are cut from them
#: (:func:`~medvision.transforms.chain.lesion_patches`): half precision for the image
#: channels, one byte for the binary nodule mask; patches are float32 again once cut.
CACHED_DTYPES = (torch.float16, torch.uint8)
#: Input channels (the windowed CT; ``dot_enhancement`` adds one).
CHANNELS = 1
#: ``dot_enhancement``: the filter's scales (Gaussian standard deviation, mm). A sphere
#: responds most at a radius near sigma times the square root of 3, so these cover
#: nodules of about 5 to 14 mm; larger ones still respond, less.
DOT_SIGMAS_MM: tuple[float, ...] = (1.5, 2.5, 4.0)
#: ``dot_enhancement``: the channel is the response in units of this many HU, so that a
#: typical nodule reads about 1. Measured on 4 ``tune`` scans of the phantoms
#: (2026-11-27): 5-85 HU at the nodules, 12-16 HU at the 99.9th percentile of the lung
#: region.
DOT_UNIT_HU = 25.0
#: ``dot_enhancement``: the channel is clipped to this.
DOT_CEILING = 4.0
#: Canonical orientation (MONAI axis codes).
ORIENTATION = "RAS"
#: Masks of the phantoms' ground truth, in channel order.
MASK_NAMES: tuple[str, ...] = ("nodule",)
#: Training with hard negatives: the name of the mask of a scan's mined false
#: positives (``scripts/mine_ct_hard_negatives.py``), loaded as an extra mask channel.
HARD_NEGATIVE_MASK = "hard_negative"
#: Training: patches without a nodule are centred on voxels above this HU (denser than
#: aerated lung, about -860 HU in the phantoms). Measured on a segmenter trained with
#: patches centred anywhere, its largest false positives lay at the hila and the
#: mediastinum, places a patch centred anywhere in the volume (half of it air) rarely
#: covers (``benchmarks/ct_components.py``, docs/training.md).
NEGATIVE_MIN_HU = -600.0


class CtWindow(StrEnum):
    """Named HU windows (lower and upper HU in :data:`WINDOWS_HU`)."""

    LUNG_NODULE = "lung_nodule"
    LUNG = "lung"
    MEDIASTINUM = "mediastinum"


#: HU range of each window: air to just above soft tissue for nodules; the usual
#: lung (centre -600, width 1500) and mediastinal (centre 40, width 400) windows.
WINDOWS_HU: dict[CtWindow, tuple[float, float]] = {
    CtWindow.LUNG_NODULE: (-1000.0, 400.0),
    CtWindow.LUNG: (-1350.0, 150.0),
    CtWindow.MEDIASTINUM: (-160.0, 240.0),
}


@dataclasses.dataclass(frozen=True)
class CtTransforms(TransformChain):
    """Parameters of the CT chain (see the module docstring).

    Parameters
    ----------
    window
        The HU window (a :class:`CtWindow` or its name).
    spacing_mm
        Target voxel spacing (RAS axes).
    roi_size
        Patch size in voxels (training crops, sliding-window inference).
    samples_per_volume
        Training: patches drawn from each volume.
    positive_fraction
        Training with a mask: share of patches centred on a mask voxel.
    negative_min_hu
        Training with a mask: the other patches are centred on voxels above this HU
        (``None``: anywhere in the volume).
    balance_lesions
        Training with a mask: the patches around a nodule pick each nodule of the
        scan equally often, not each nodule voxel
        (:func:`~medvision.transforms.crop_centres.lesion_balanced_indices`).
    intensity_fraction
        Training: largest random relative intensity scale and shift.
    augment_probability
        Training: probability of each random intensity step.
    patch_symmetries
        Training: flip each patch along each axis at random and turn it by a random
        multiple of 90 degrees in the axial plane
        (:func:`~medvision.transforms.chain.patch_symmetries`), image and mask alike.
    dot_enhancement
        Append the Hessian dot filter of the windowed image as a second channel
        (:class:`~medvision.transforms.enhancement.DotEnhancementd`), in training and
        serving alike; the network then takes :attr:`channels` input channels. The
        patches without a nodule are then centred where either channel is above its
        threshold (MONAI's rule): the filter adds blob-like spots of aerated lung, about
        0.1 % of a scan's voxels (one ``tune`` scan), to the dense tissue.
    hard_negatives
        Training with a mask: the share of the patches without a nodule centred on a
        voxel of the scan's mined false positives, the mask :data:`HARD_NEGATIVE_MASK`
        (``scripts/mine_ct_hard_negatives.py``), loaded as a second mask channel
        (:meth:`training_mask_names`) and dropped once the patches are cut; a scan
        whose mask is empty gives the plain negative patches. 0 (default): none.
    lesion_contrast
        Training with a mask: ``(low, high)``; with probability
        ``augment_probability`` a patch holding nodule voxels has its nodules faded
        to a share of their contrast drawn from that range
        (:class:`~medvision.transforms.intensity.RandLesionContrastd`), so that faint
        nodules (ground glass, a low-dose scanner) are seen as often as solid ones.
        ``None`` (default): no fading.
    """

    name = "ct"
    modality = Modality.CT
    mask_names = MASK_NAMES

    window: CtWindow = CtWindow.LUNG_NODULE
    spacing_mm: tuple[float, float, float] = SPACING_MM
    roi_size: tuple[int, int, int] = ROI_SIZE
    samples_per_volume: int = 4
    positive_fraction: float = 0.67
    negative_min_hu: float | None = NEGATIVE_MIN_HU
    balance_lesions: bool = True
    intensity_fraction: float = 0.1
    augment_probability: float = 0.5
    patch_symmetries: bool = False
    dot_enhancement: bool = False
    lesion_contrast: tuple[float, float] | None = None
    hard_negatives: float = 0.0

    def training_mask_names(self, findings: Sequence[str]) -> tuple[str, ...]:
        """Return the masks a training item loads: ``findings``, then the hard negatives'."""
        return (*findings, HARD_NEGATIVE_MASK) if self.hard_negatives > 0.0 else tuple(findings)

    @property
    def channels(self) -> int:
        """Input channels of the chain's image: 1, or 2 with ``dot_enhancement``."""
        return CHANNELS + int(self.dot_enhancement)

    def __post_init__(self) -> None:
        """Check the parameters; a window name becomes a :class:`CtWindow`."""
        object.__setattr__(self, "window", parse_choice(CtWindow, self.window, "CT window"))
        check_positive("spacing_mm", self.spacing_mm)
        check_positive("roi_size", self.roi_size)
        check_positive("samples_per_volume", [self.samples_per_volume])
        if not 0.0 <= self.positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {self.positive_fraction}")
        if not 0.0 <= self.hard_negatives <= 1.0:
            raise ValueError(f"hard_negatives must be in [0, 1], got {self.hard_negatives}")
        if self.lesion_contrast is not None and not is_share_range(self.lesion_contrast):
            raise ValueError(
                f"lesion_contrast must be (low, high) with 0 <= low <= high <= 1, "
                f"got {self.lesion_contrast}"
            )

    def steps(self, training: bool, keys: list[str], modes: list[str]) -> list[Transform]:
        """Return orientation, spacing and window; in training, patches and jitter."""
        low, high = WINDOWS_HU[self.window]
        steps = [
            Orientationd(keys, axcodes=ORIENTATION, labels=None),
            Spacingd(keys, pixdim=self.spacing_mm, mode=modes, padding_mode="border"),
            ScaleIntensityRanged(IMAGE_KEY, low, high, 0.0, 1.0, clip=True),
        ]
        if self.dot_enhancement:
            steps.append(
                DotEnhancementd(
                    IMAGE_KEY, DOT_SIGMAS_MM, unit=DOT_UNIT_HU / (high - low), ceiling=DOT_CEILING
                )
            )
        if not training:
            return steps
        if len(keys) > 1:
            steps += lesion_patches(
                keys,
                self.roi_size,
                self.positive_fraction,
                self.samples_per_volume,
                foreground_threshold=None
                if self.negative_min_hu is None
                else (self.negative_min_hu - low) / (high - low),
                balance_lesions=self.balance_lesions,
                cached_dtypes=CACHED_DTYPES,
                hard_negative_share=self.hard_negatives,
            )
        else:
            steps += [
                SpatialPadd(keys, self.roi_size),
                RandSpatialCropSamplesd(
                    keys, self.roi_size, self.samples_per_volume, random_size=False
                ),
            ]
        if self.patch_symmetries:
            steps += patch_symmetries(keys, self.roi_size)
        if self.lesion_contrast is not None and len(keys) > 1:
            steps.append(
                RandLesionContrastd(
                    IMAGE_KEY, keys[1], self.lesion_contrast, prob=self.augment_probability
                )
            )
        return steps + intensity_jitter(self.intensity_fraction, self.augment_probability)


#: Compose the CT chain: ``build_transforms(training, chain=None, *, mask_key=None,
#: mask_names=None)``, see :meth:`~medvision.transforms.chain.TransformChain.build`; in
#: training with a mask key, patches are sampled around mask voxels.
build_transforms = CtTransforms.build_default


def sliding_window_inferer(
    roi_size: Sequence[int] = ROI_SIZE, sw_batch_size: int | None = None, overlap: float = 0.25
) -> SlidingWindowInferer:
    """Return the patch-based inferer for whole volumes from the CT chain.

    Windows of ``roi_size`` overlap by ``overlap`` and are blended with Gaussian
    weights (less weight at patch borders, where context is missing); volumes
    smaller than a window are padded. ``sw_batch_size`` windows go through the
    network at once; by default as many as hold :data:`WINDOW_BATCH_VOXELS` voxels.
    See ``monai.inferers.SlidingWindowInferer``.
    """
    if sw_batch_size is None:
        sw_batch_size = max(1, WINDOW_BATCH_VOXELS // math.prod(int(v) for v in roi_size))
    return SlidingWindowInferer(
        roi_size=tuple(roi_size), sw_batch_size=sw_batch_size, overlap=overlap, mode="gaussian"
    )
