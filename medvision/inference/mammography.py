"""Score screening mammograms: a per-view classifier, aggregated per breast and per study.

The network sees one view at a time (``(1, 256, 192)``, chest wall on the left,
:mod:`medvision.transforms.mammo`) and gives one logit: malignancy of the breast
that view shows. Per study:

- ``malignancy_left`` / ``malignancy_right``: the mean of the logits of the
  breast's views (:func:`breast_logit`);
- ``malignancy``: the larger of the two breasts' logits (a study is positive when
  either breast is).

Why the mean and not the maximum: a lesion lies in the breast, so it projects
onto both the CC and the MLO view (the phantoms place every lesion on both);
averaging two looks at the same lesion halves the variance of the per-view
noise, whereas the maximum of two noisy scores drifts upward in every breast,
negative ones included. The maximum would suit lesions seen in one projection
only (e.g. masked by dense tissue on the other view). A first CPU run (300
phantom studies, 5 epochs) learnt too little to tell the two apart (tuning
per-breast AUROC 0.57 with the mean, 0.50 with the maximum, both near chance):
compare them again on the tuning split of a properly trained model.

Locations: one :class:`~medvision.inference.scoring.Location` per view under
its breast's finding (``referenced_uid`` the view's SOPInstanceUID,
``laterality`` R or L), and under ``malignancy`` those of the breast that gave
the study's logit. The centre is the centre of the breast region (the chain's
breast crop, mapped back onto the source pixel grid), not the lesion: a lesion
position needs a saliency map (Grad-CAM), which a later step adds; ``score`` is
left ``None`` because the scorer's outputs are raw, uncalibrated logits.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms.compose import Compose
from torch import nn

from medvision.inference.scoring import (
    Location,
    PreparedStudy,
    StudyScore,
    apply_study_transforms,
    register_scorer,
)
from medvision.modality import Modality
from medvision.models.registry import ModelEntry, Task
from medvision.training.loop import forward_logits, plain_tensor
from medvision.transforms import chain_from_description
from medvision.transforms.chain import MapKind, to_original_grid
from medvision.transforms.loading import IMAGE_KEY, UID_KEY, StudyLoadError

#: Per ImageLaterality (0020,0062), the finding of that breast.
BREAST_FINDINGS: dict[str, str] = {"R": "malignancy_right", "L": "malignancy_left"}
#: The study-level finding: malignancy in either breast.
STUDY_FINDING = "malignancy"
#: Breast names for messages.
BREAST_NAMES: dict[str, str] = {"R": "right", "L": "left"}
#: Views run through the network at once.
VIEW_BATCH = 32


def view_laterality(view: Mapping[str, Any]) -> str:
    """Return the ImageLaterality (``"R"`` or ``"L"``) of a transformed view item."""
    return str(view[IMAGE_KEY].meta["laterality"])


def view_name(view: Mapping[str, Any]) -> str:
    """Return a view's short name, e.g. ``"L-MLO"``."""
    meta = view[IMAGE_KEY].meta
    return f"{meta['laterality']}-{meta['view_position']}"


def breast_finding(view: Mapping[str, Any]) -> str:
    """Return the finding of the breast a view shows (``malignancy_left`` or ``_right``).

    Raises
    ------
    StudyLoadError
        If the view's laterality is neither R nor L.
    """
    laterality = view_laterality(view)
    if laterality not in BREAST_FINDINGS:
        study = view[IMAGE_KEY].meta.get("study_instance_uid", "?")
        raise StudyLoadError(
            f"study {study}: view {view_name(view)} has ImageLaterality (0020,0062) "
            f"'{laterality}'; the per-breast finding needs R or L"
        )
    return BREAST_FINDINGS[laterality]


def views_by_breast(study: PreparedStudy) -> dict[str, list[int]]:
    """Return, per laterality (``"R"``, ``"L"``), the indices of the study's views.

    Raises
    ------
    StudyLoadError
        If a breast has no view at all (its finding could not be scored); the
        message names the missing breast and the views the study has. A breast
        with one view (CC or MLO missing) is scored from that view.
    """
    breasts: dict[str, list[int]] = {laterality: [] for laterality in BREAST_FINDINGS}
    for index, view in enumerate(study.inputs):
        breast_finding(view)
        breasts[view_laterality(view)].append(index)
    missing = [BREAST_NAMES[side] for side, indices in breasts.items() if not indices]
    if missing:
        found = ", ".join(view_name(view) for view in study.inputs) or "none"
        raise StudyLoadError(
            f"study {study.study_instance_uid}: no view of the {' and '.join(missing)} "
            f"breast (views found: {found}); per-breast malignancy needs at least one "
            "view (CC or MLO) of each breast"
        )
    return breasts


def breast_logit(view_logits: Sequence[float]) -> float:
    """Return a breast's logit from its views' logits: their mean (see the module docstring).

    Raises
    ------
    ValueError
        If there is no view logit.
    """
    if not view_logits:
        raise ValueError("a breast's logit needs at least one view logit")
    return float(np.mean(np.asarray(view_logits, dtype=np.float64)))


def view_logits(
    network: nn.Module, images: Sequence[torch.Tensor], device: torch.device
) -> list[float]:
    """Run ``network`` over view images, :data:`VIEW_BATCH` at once, one logit per view.

    Each batch goes through :func:`medvision.training.loop.forward_logits` (eval
    mode, no gradients; bf16 autocast and channels-last on CUDA), as in training.

    Raises
    ------
    ValueError
        If the network does not give exactly one logit per view.
    """
    logits: list[float] = []
    for start in range(0, len(images), VIEW_BATCH):
        batch = torch.stack([plain_tensor(image) for image in images[start : start + VIEW_BATCH]])
        output = forward_logits(network, batch, device)
        if output.shape != (len(batch), 1):
            raise ValueError(
                f"the mammography network must give one logit per view, got output of "
                f"shape {output.shape} for {len(batch)} view(s)"
            )
        logits += output.reshape(-1).tolist()
    return logits


def breast_region_centre(view: Mapping[str, Any], transforms: Compose) -> tuple[float, float]:
    """Return ``(row, column)`` of the centre of a view's breast crop on the source grid.

    The whole model input is mapped back with the chain's inverse (padding
    removed, resize undone, crop re-padded with zeros, laterality flip undone),
    which leaves ones over the breast crop of the source image.
    """
    image = view[IMAGE_KEY]
    region = to_original_grid(torch.ones(image.shape), view, transforms, MapKind.LABEL)[0]
    rows, columns = np.nonzero(region > 0.5)
    if rows.size == 0:
        return (region.shape[0] - 1) / 2.0, (region.shape[1] - 1) / 2.0
    return (
        float(rows.min() + rows.max()) / 2.0,
        float(columns.min() + columns.max()) / 2.0,
    )


@functools.lru_cache(maxsize=8)
def _evaluation_chain(description: str) -> Compose:
    chain = chain_from_description(json.loads(description))
    if chain.modality != Modality.MAMMO:
        raise ValueError(f"transform chain '{chain.name}' is not a mammography chain")
    return chain.build(training=False)


def evaluation_transforms(entry: ModelEntry) -> Compose:
    """Return the evaluation chain of ``entry``, built once per chain description.

    Every scorer instance shares it, so views prepared by one instance can be
    scored (and their locations mapped back) by another: MONAI only inverts
    through the transform instances that were applied.

    Raises
    ------
    ValueError
        If the entry's chain is unknown, of another version, or not a
        mammography chain.
    """
    try:
        return _evaluation_chain(json.dumps(entry.transforms, sort_keys=True))
    except ValueError as error:
        raise ValueError(f"model {entry.name}: {error}") from None


class MammographyScorer:
    """The :class:`~medvision.inference.scoring.Scorer` of per-view mammography classifiers."""

    def transforms(self, entry: ModelEntry) -> Compose:
        """Return the evaluation chain of ``entry`` (:func:`evaluation_transforms`)."""
        return evaluation_transforms(entry)

    def prepare(self, entry: ModelEntry, item: dict[str, Any]) -> PreparedStudy:
        """Load a study and transform each of its views (R-CC, L-CC, R-MLO, L-MLO order).

        Raises
        ------
        StudyLoadError
            If the study cannot be loaded, or a breast has no view
            (:func:`views_by_breast`).
        """
        views = apply_study_transforms(evaluation_transforms(entry), item)
        inputs = views if isinstance(views, list) else [views]
        study = PreparedStudy(study_instance_uid=str(item[UID_KEY]), inputs=inputs)
        views_by_breast(study)
        return study

    def score(
        self,
        network: nn.Module,
        entry: ModelEntry,
        studies: Sequence[PreparedStudy],
        device: torch.device,
    ) -> list[StudyScore]:
        """Score studies: all their views in batches, then per breast and per study.

        Raises
        ------
        StudyLoadError
            If a study has a breast without a view.
        ValueError
            If the network does not give one logit per view.
        """
        transforms = evaluation_transforms(entry)
        breasts = [views_by_breast(study) for study in studies]
        images = [view[IMAGE_KEY] for study in studies for view in study.inputs]
        flat = view_logits(network, images, device)
        scores: list[StudyScore] = []
        offset = 0
        for study, indices in zip(studies, breasts, strict=True):
            logits_of_views = flat[offset : offset + len(study.inputs)]
            offset += len(study.inputs)
            logits: dict[str, float] = {}
            locations: dict[str, list[Location]] = {}
            for laterality, finding in BREAST_FINDINGS.items():
                views = indices[laterality]
                logits[finding] = breast_logit([logits_of_views[i] for i in views])
                locations[finding] = [
                    Location(
                        referenced_uid=str(study.inputs[i][IMAGE_KEY].meta["sop_instance_uids"][0]),
                        centre=breast_region_centre(study.inputs[i], transforms),
                        laterality=laterality,
                    )
                    for i in views
                ]
            worse = max(BREAST_FINDINGS.values(), key=lambda finding: logits[finding])
            logits[STUDY_FINDING] = logits[worse]
            locations[STUDY_FINDING] = list(locations[worse])
            scores.append(
                StudyScore(
                    study_instance_uid=study.study_instance_uid,
                    logits={finding: logits[finding] for finding in entry.findings},
                    locations={finding: locations[finding] for finding in entry.findings},
                )
            )
        return scores


register_scorer(Modality.MAMMO, Task.CLASSIFICATION, MammographyScorer)
