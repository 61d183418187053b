"""The CT nodule segmenter's scorer: sliding-window probabilities, nodules as connected components.

For each study:

1. the entry's CT chain (evaluation mode) gives the RAS volume at 2 mm;
2. :func:`~medvision.transforms.ct.sliding_window_inferer` runs the network over it
   (bf16 autocast on CUDA) and the sigmoid of the blended logits is the nodule
   probability of each voxel;
3. voxels with probability ``>=`` :data:`PROBABILITY_THRESHOLD` are grouped into
   26-connected components (``scipy.ndimage.label``); components smaller than
   :data:`MIN_NODULE_VOLUME_MM3` (a 3 mm sphere — LUNA16 leaves nodules below
   3 mm out of its reference, Setio et al. 2017; at 2 mm voxels, a lone voxel) are
   discarded, and so are components with no voxel in the lung region
   (:func:`nodule_region`, :mod:`medvision.inference.lung_region`: the network
   also marks voxels in the air around the patient, which training patches never
   show it whole); each remaining component is a nodule with its centroid in patient
   coordinates (LPS mm, as ImagePositionPatient, PS3.3 C.7.6.2.1.1), its
   equivalent-sphere diameter ``(6 V / π)^(1/3)`` and its score, the component's
   highest probability;
4. the study-level raw score of the finding (a logit, before calibration) is the
   highest blended logit inside a nodule — the logit of the best nodule's score,
   so a study is as suspicious as its most suspicious nodule and the study and
   nodule operating points agree — or, with no nodule, the highest logit of the
   volume (still ranks studies whose peak stays below the threshold);
5. the mask of the kept nodules is mapped back onto the DICOM grid
   (:func:`~medvision.transforms.chain.to_original_grid`, nearest neighbour) and
   returned as ``(slices, rows, columns)`` uint8 in InstanceNumber order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.meta_tensor import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.inferers.inferer import SlidingWindowInferer
from monai.transforms.compose import Compose
from numpy.typing import NDArray
from scipy import ndimage, special
from torch import nn

from medvision.choices import parse_choice
from medvision.inference.lung_region import AIR_HU, lung_region
from medvision.inference.scoring import (
    Location,
    PreparedStudy,
    StudyScore,
    apply_study_transforms,
    register_scorer,
)
from medvision.modality import Modality
from medvision.models.registry import ModelEntry, Task, load_model, read_entry
from medvision.training.loop import autocast, place_network
from medvision.transforms import chain_from_description
from medvision.transforms.chain import MapKind, to_original_grid
from medvision.transforms.ct import WINDOWS_HU, CtTransforms, CtWindow, sliding_window_inferer
from medvision.transforms.loading import IMAGE_KEY, LPS_TO_RAS, MASK_KEY, UID_KEY

#: A voxel is nodule when its probability is at least this.
PROBABILITY_THRESHOLD = 0.5
#: Diameter (mm) of the smallest nodule kept.
MIN_NODULE_DIAMETER_MM = 3.0
#: Volume (mm³) of the smallest component kept: a sphere of :data:`MIN_NODULE_DIAMETER_MM`.
MIN_NODULE_VOLUME_MM3 = math.pi / 6.0 * MIN_NODULE_DIAMETER_MM**3
#: Component connectivity: 26 neighbours (faces, edges and corners).
CONNECTIVITY = ndimage.generate_binary_structure(3, 3)

#: Keys of a prepared input: the transformed item and the chain that made it (for inversion).
ITEM_KEY = "item"
TRANSFORMS_KEY = "transforms"


@dataclass(frozen=True)
class NoduleComponent:
    """One connected component of the thresholded probability map.

    Attributes
    ----------
    label
        Its label in the component map (1, 2, … in scan order of the array).
    voxels
        Number of voxels.
    volume_mm3
        Volume in mm³.
    diameter_mm
        Diameter of the sphere of that volume.
    centre_mm
        Centroid in patient coordinates (LPS, mm).
    probability
        Highest voxel probability in the component.
    logit
        Highest voxel logit in the component.
    """

    label: int
    voxels: int
    volume_mm3: float
    diameter_mm: float
    centre_mm: tuple[float, float, float]
    probability: float
    logit: float


def equivalent_diameter_mm(volume_mm3: float) -> float:
    """Return the diameter of the sphere of ``volume_mm3``: ``(6 V / π)^(1/3)``."""
    return float((6.0 * volume_mm3 / math.pi) ** (1.0 / 3.0))


def ras_to_lps(point_ras: Sequence[float]) -> tuple[float, float, float]:
    """Return a RAS point (MONAI's patient axes) in DICOM's LPS (x and y change sign)."""
    x, y, z, _ = LPS_TO_RAS @ np.array([*point_ras, 1.0])
    return float(x), float(y), float(z)


def find_nodules(
    logits: NDArray[np.floating[Any]],
    affine_ras: NDArray[np.floating[Any]],
    *,
    region: NDArray[np.bool_] | None = None,
    threshold: float = PROBABILITY_THRESHOLD,
    min_volume_mm3: float = MIN_NODULE_VOLUME_MM3,
) -> tuple[NDArray[np.int32], list[NoduleComponent]]:
    """Return the kept nodules of a logit map and their component map.

    Parameters
    ----------
    logits
        ``(X, Y, Z)`` voxel logits; probability is their sigmoid.
    affine_ras
        The map's 4 x 4 voxel-to-RAS affine (mm).
    region
        When given, the voxels where a nodule may lie (:func:`nodule_region`): a
        component with no voxel inside is discarded.
    threshold
        Probability at or above which a voxel is nodule.
    min_volume_mm3
        Components smaller than this are discarded.

    Returns
    -------
    tuple
        ``(labels, nodules)``: an int32 map with 0 outside the kept nodules and
        each kept nodule's :attr:`NoduleComponent.label` inside it, and the nodules.
    """
    values = np.asarray(logits, dtype=np.float32)
    affine = np.asarray(affine_ras, dtype=np.float64)
    voxel_mm3 = abs(float(np.linalg.det(affine[:3, :3])))
    cutoff = math.log(threshold / (1.0 - threshold))  # the logit of the threshold
    labels, count = ndimage.label(values >= cutoff, structure=CONNECTIVITY)
    voxels = np.bincount(labels.ravel(), minlength=count + 1)
    voxels[0] = 0  # background
    chosen = np.flatnonzero(voxels * voxel_mm3 >= min_volume_mm3)
    if region is not None and len(chosen):
        if region.shape != values.shape:
            raise ValueError(
                f"the nodule region's shape {region.shape} differs from the logit map's "
                f"{values.shape}"
            )
        touches = ndimage.maximum(np.asarray(region, dtype=np.uint8), labels, chosen)
        chosen = chosen[np.asarray(touches, dtype=bool)]
    relabel = np.zeros(count + 1, dtype=np.int32)
    relabel[chosen] = np.arange(1, len(chosen) + 1, dtype=np.int32)
    kept = relabel[labels]
    numbers = np.arange(1, len(chosen) + 1)
    centroids = ndimage.center_of_mass(kept > 0, kept, numbers) if len(chosen) else []
    peaks = ndimage.maximum(values, kept, numbers) if len(chosen) else []
    nodules: list[NoduleComponent] = []
    for label, index, centroid, peak in zip(numbers, chosen, centroids, peaks, strict=True):
        volume = float(voxels[index]) * voxel_mm3
        centre_ras = affine @ np.array([*centroid, 1.0])
        nodules.append(
            NoduleComponent(
                label=int(label),
                voxels=int(voxels[index]),
                volume_mm3=volume,
                diameter_mm=equivalent_diameter_mm(volume),
                centre_mm=ras_to_lps(centre_ras[:3]),
                probability=float(special.expit(peak)),
                logit=float(peak),
            )
        )
    return kept, nodules


def nodule_region(image: Any, window: CtWindow | str) -> NDArray[np.bool_] | None:
    """Return where the scorer keeps nodules in a model-space CT image: its lung region.

    ``image`` is the chain's output, ``(channels, X, Y, Z)`` whose first channel is
    ``window`` scaled to ``[0, 1]``, with a RAS affine; the region is
    :func:`~medvision.inference.lung_region.lung_region` of its voxels below
    :data:`~medvision.inference.lung_region.AIR_HU`. ``None`` (no restriction)
    when the window does not reach below that (the mediastinal window shows no air)
    or when no air lies inside the patient, so that a scan whose lungs cannot be
    found keeps every component rather than losing its nodules.

    Raises
    ------
    ValueError
        If ``image`` is not a MetaTensor (it would carry no voxel size).
    """
    if not isinstance(image, MetaTensor):
        raise ValueError(f"the image is a {type(image).__name__}: it carries no geometry")
    low, high = WINDOWS_HU[parse_choice(CtWindow, window, "CT window")]
    if not low < AIR_HU < high:
        return None
    scaled = np.asarray(image.as_tensor().detach().cpu().numpy()[0], dtype=np.float32)
    voxel_mm = [
        float(v) for v in affine_to_spacing(np.asarray(image.affine, dtype=np.float64), r=3)
    ]
    region = lung_region(scaled < (AIR_HU - low) / (high - low), voxel_mm)
    return region if region.any() else None


def in_instance_order(volume: NDArray[Any], meta: Mapping[str, Any]) -> NDArray[Any]:
    """Reorder slices from the loaded (slice-normal) order to InstanceNumber order."""
    numbers = np.asarray(meta["instance_numbers"])
    return volume[np.argsort(numbers, kind="stable")]


def study_peak(
    logits: NDArray[np.floating[Any]], labels: NDArray[np.integer[Any]]
) -> tuple[float, tuple[int, int, int]]:
    """Return the study's logit and its voxel: the highest logit inside a kept nodule.

    With no nodule (``labels`` all 0), the highest logit of the volume. ``labels`` is
    :func:`find_nodules`'s component map of the same ``(X, Y, Z)`` grid.
    """
    values = np.asarray(logits, dtype=np.float32)
    inside = np.asarray(labels) > 0
    ranked = np.where(inside, values, -np.inf) if inside.any() else values
    x, y, z = np.unravel_index(int(np.argmax(ranked)), values.shape)
    return float(values[x, y, z]), (int(x), int(y), int(z))


def study_score_from_logits(
    logits: NDArray[np.floating[Any]],
    item: Mapping[str, Any],
    transforms: Compose,
    findings: Sequence[str],
    region: NDArray[np.bool_] | None = None,
) -> StudyScore:
    """Turn the network's logit map of one study into its :class:`StudyScore`.

    Parameters
    ----------
    logits
        ``(findings, X, Y, Z)`` blended logits on the grid of ``item["image"]``.
    item
        The transformed item (model space), with its MONAI trace.
    transforms
        The chain that produced ``item`` (evaluation mode), to map masks back.
    findings
        The finding of each channel.
    region
        Where nodules may lie (:func:`nodule_region`; ``None``: anywhere).

    Raises
    ------
    ValueError
        If the logit map does not fit the image or the findings (see also
        :func:`~medvision.transforms.chain.to_original_grid`).
    """
    image = item[IMAGE_KEY]
    if not isinstance(image, MetaTensor):
        raise ValueError(f"item['{IMAGE_KEY}'] is not a MetaTensor: it carries no geometry")
    values = np.asarray(logits, dtype=np.float32)
    if values.shape != (len(findings), *image.shape[1:]):
        raise ValueError(
            f"logit map of shape {values.shape} does not fit {len(findings)} finding(s) "
            f"on the image's {tuple(image.shape[1:])}"
        )
    affine = np.asarray(image.affine, dtype=np.float64)
    series_uid = str(image.meta["series_instance_uid"])
    study_logits: dict[str, float] = {}
    locations: dict[str, list[Location]] = {}
    masks: dict[str, NDArray[np.uint8]] = {}
    for channel, finding in enumerate(findings):
        labels, nodules = find_nodules(values[channel], affine, region=region)
        study_logits[finding], _ = study_peak(values[channel], labels)
        locations[finding] = [
            Location(
                referenced_uid=series_uid,
                centre=n.centre_mm,
                diameter_mm=n.diameter_mm,
                score=n.probability,
            )
            for n in nodules
        ]
        back = to_original_grid((labels > 0).astype(np.float32), item, transforms, MapKind.LABEL)[0]
        masks[finding] = in_instance_order((back > 0.5).astype(np.uint8), image.meta)
    return StudyScore(
        study_instance_uid=str(image.meta["study_instance_uid"]),
        logits=study_logits,
        locations=locations,
        masks=masks,
    )


def ct_chain(entry: ModelEntry) -> CtTransforms:
    """Return the CT chain an entry records.

    Raises
    ------
    ValueError
        If the entry's chain is not the CT chain (or is refused by
        :func:`~medvision.transforms.chain_from_description`), or its network's
        input channels are not the chain's.
    """
    chain = chain_from_description(entry.transforms)
    if not isinstance(chain, CtTransforms):
        raise ValueError(
            f"model {entry.name}: the CT segmenter scorer needs the 'ct' transform chain, "
            f"the entry records '{entry.transforms.get('name')}'"
        )
    channels = entry.network.get("in_channels", chain.channels)
    if channels != chain.channels:
        raise ValueError(
            f"model {entry.name}: its network takes {channels} input channel(s), its CT "
            f"chain gives {chain.channels}"
        )
    return chain


def window_size(entry: ModelEntry) -> tuple[int, ...]:
    """Return the sliding-window size of a CT segmenter: its input size, else its chain's."""
    return tuple(int(v) for v in (entry.input_size or ct_chain(entry).roi_size))


class CtSegmenterScorer:
    """Scorer of CT nodule segmenters (see the module docstring).

    The evaluation chain of each model is composed once per scorer instance; each
    prepared study keeps it, since mapping masks back replays that very chain.
    """

    def __init__(self) -> None:
        self._transforms: dict[str, Compose] = {}

    def transforms(self, entry: ModelEntry) -> Compose:
        """Return the evaluation chain of ``entry`` (built once per chain description).

        Raises
        ------
        ValueError
            If the entry's chain is not the CT chain (see :func:`ct_chain`).
        """
        key = json.dumps(entry.transforms, sort_keys=True)
        if key not in self._transforms:
            self._transforms[key] = ct_chain(entry).build(training=False)
        return self._transforms[key]

    def prepare(self, entry: ModelEntry, item: dict[str, Any]) -> PreparedStudy:
        """Load the study's CT series and apply the entry's chain (evaluation mode).

        Raises
        ------
        medvision.transforms.loading.StudyLoadError
            If the study cannot be loaded (no CT series, several and none chosen,
            missing geometry, unreadable slices …).
        ValueError
            If the entry's chain is not the CT chain.
        """
        transforms = self.transforms(entry)
        transformed = apply_study_transforms(transforms, item)
        return PreparedStudy(
            study_instance_uid=str(item[UID_KEY]),
            inputs=[{ITEM_KEY: transformed, TRANSFORMS_KEY: transforms}],
        )

    def score(
        self,
        network: nn.Module,
        entry: ModelEntry,
        studies: Sequence[PreparedStudy],
        device: torch.device,
    ) -> list[StudyScore]:
        """Segment each prepared study and report its nodules, mask and study logit."""
        network.eval()
        place_network(network, device)
        inferer = sliding_window_inferer(window_size(entry))
        window = ct_chain(entry).window
        scores = []
        for study in studies:
            prepared = study.inputs[0]
            item, transforms = prepared[ITEM_KEY], prepared[TRANSFORMS_KEY]
            logits = predict_logit_map(network, inferer, item[IMAGE_KEY], device)
            region = nodule_region(item[IMAGE_KEY], window)
            scores.append(study_score_from_logits(logits, item, transforms, entry.findings, region))
        return scores


@dataclass(frozen=True)
class SegmenterOnCpu:
    """A CT segmenter loaded for offline analysis of a manifest's studies on the CPU.

    Attributes
    ----------
    entry
        The registry entry (its weights' hash verified at load).
    network
        The network, float32, in eval mode on the CPU.
    chain
        The entry's CT chain.
    transforms
        That chain in evaluation mode, loading the ground-truth masks of the
        entry's findings under :data:`~medvision.transforms.loading.MASK_KEY`.
    inferer
        The sliding-window inferer of the entry's patch size.
    """

    entry: ModelEntry
    network: nn.Module
    chain: CtTransforms
    transforms: Compose
    inferer: SlidingWindowInferer

    @classmethod
    def load(cls, model: Path) -> SegmenterOnCpu:
        """Load the registry entry ``model`` (``.json``) and what analysing with it needs."""
        entry = read_entry(model)
        network = place_network(load_model(entry, model.parent).float().eval(), torch.device("cpu"))
        chain = ct_chain(entry)
        transforms = chain.build(False, mask_key=MASK_KEY, mask_names=entry.findings)
        return cls(entry, network, chain, transforms, sliding_window_inferer(window_size(entry)))


def predict_logit_map(
    network: nn.Module,
    inferer: SlidingWindowInferer,
    image: torch.Tensor,
    device: torch.device,
) -> NDArray[np.float32]:
    """Return the blended ``(findings, X, Y, Z)`` logits of a ``(channels, X, Y, Z)`` volume.

    Runs ``inferer`` (a MONAI sliding-window inferer) without gradients, with
    bf16 autocast on CUDA; the network must already be on ``device`` in eval mode.
    """
    volume = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
    with torch.no_grad(), autocast(device):
        output = inferer(volume[None].to(device), network)
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"the network returned {type(output).__name__}, expected a tensor")
    return np.asarray(output.float()[0].cpu().numpy(), dtype=np.float32)


register_scorer(Modality.CT, Task.SEGMENTATION, CtSegmenterScorer)
