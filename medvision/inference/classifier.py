"""Score single-image classifiers: chest X-ray and fundus (one image, one logit per finding).

``prepare`` runs the model's evaluation transform chain (the one recorded in its
registry entry, :func:`medvision.transforms.chain_from_description`) on the
study's one image; ``score`` stacks the images of every given study into one
batch and runs the network with :func:`medvision.training.loop.forward_logits`
(eval mode, no gradients, bf16 autocast and channels-last on CUDA only), exactly
as the training loop scores its tuning data.

Locations are left empty: where a finding is needs a saliency map (Grad-CAM),
which a later step adds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from monai.transforms.compose import Compose
from torch import nn

from medvision.inference.scoring import (
    PreparedStudy,
    StudyScore,
    apply_study_transforms,
    register_scorer,
)
from medvision.modality import Modality
from medvision.models.registry import ModelEntry, Task
from medvision.training.loop import forward_logits, plain_tensor
from medvision.transforms import chain_from_description
from medvision.transforms.loading import IMAGE_KEY, UID_KEY, StudyLoadError

#: Modalities whose studies are one image scored by a classifier.
SINGLE_IMAGE_MODALITIES: tuple[Modality, ...] = (Modality.CXR, Modality.FUNDUS)


class ImageClassifierScorer:
    """The :class:`~medvision.inference.scoring.Scorer` of single-image classifiers.

    The evaluation chain of each model is composed once per scorer instance.
    """

    def __init__(self) -> None:
        self._transforms: dict[str, Compose] = {}

    def transforms(self, entry: ModelEntry) -> Compose:
        """Return the evaluation chain of ``entry`` (built once per chain description).

        Raises
        ------
        ValueError
            If the chain is unknown, of another version than the code's, or not a
            chain of the entry's modality.
        """
        key = json.dumps(entry.transforms, sort_keys=True)
        if key not in self._transforms:
            chain = chain_from_description(entry.transforms)
            if chain.modality != entry.modality:
                raise ValueError(
                    f"model {entry.name}: transform chain '{chain.name}' does not prepare "
                    f"{entry.modality.value} images"
                )
            self._transforms[key] = chain.build(training=False)
        return self._transforms[key]

    def prepare(self, entry: ModelEntry, item: dict[str, Any]) -> PreparedStudy:
        """Load the study's one image and run the model's evaluation chain on it.

        Raises
        ------
        StudyLoadError
            If the study cannot be loaded: no image of the modality, several
            images and none chosen, unreadable file or undecodable pixel data.
        """
        prepared = apply_study_transforms(self.transforms(entry), item)
        if not isinstance(prepared, dict):
            raise StudyLoadError(
                f"study {item[UID_KEY]}: the {entry.modality.value} chain gave "
                f"{len(prepared)} images; model {entry.name} takes one"
            )
        return PreparedStudy(study_instance_uid=str(item[UID_KEY]), inputs=[prepared])

    def score(
        self,
        network: nn.Module,
        entry: ModelEntry,
        studies: Sequence[PreparedStudy],
        device: torch.device,
    ) -> list[StudyScore]:
        """Score studies in one batch: one logit per output of ``entry``, no locations.

        The outputs are the findings, then a grading scale's further cut points
        (``ModelEntry.output_names``), whose logits go to ``grade_logits``.

        Raises
        ------
        ValueError
            If a study has other than one prepared image, or the network does not
            give one logit per output.
        """
        if not studies:
            return []
        for study in studies:
            if len(study.inputs) != 1:
                raise ValueError(
                    f"study {study.study_instance_uid}: model {entry.name} scores one image "
                    f"per study, got {len(study.inputs)}"
                )
        images = torch.stack([plain_tensor(study.inputs[0][IMAGE_KEY]) for study in studies])
        network.to(device)
        logits = forward_logits(network, images, device)
        outputs = entry.output_names
        if logits.shape != (len(studies), len(outputs)):
            raise ValueError(
                f"model {entry.name}: the network gave output of shape {logits.shape} for "
                f"{len(studies)} image(s); expected one logit per output "
                f"({len(outputs)}: {', '.join(outputs)})"
            )
        count = len(entry.findings)
        return [
            StudyScore(
                study_instance_uid=study.study_instance_uid,
                logits={
                    finding: float(logits[row, column])
                    for column, finding in enumerate(entry.findings)
                },
                grade_logits=tuple(float(v) for v in logits[row, count:]),
            )
            for row, study in enumerate(studies)
        ]


for _modality in SINGLE_IMAGE_MODALITIES:
    register_scorer(_modality, Task.CLASSIFICATION, ImageClassifierScorer)
