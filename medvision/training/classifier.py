"""Train, calibrate and register an image classifier (chest X-ray, fundus) from a manifest.

The steps, each on the manifest's own splits (phantom sets split by patient):

1. train on ``train`` with the chosen loss (plain BCE, focal, or class-balanced
   focal — Lin et al. 2017; Cui et al. 2019) and optionally a balanced sampler,
   watching AUROC on ``tune`` each epoch;
2. calibrate each finding on ``calibration`` (temperature, Platt or isotonic,
   chosen by cross-validated ECE — :func:`medvision.calibration.scaling.fit_best_calibrator`);
3. pick each finding's operating threshold on ``tune`` for the target sensitivity
   (:func:`medvision.calibration.operating_point.threshold_for_sensitivity`);
4. write fp16 weights and the registry entry (thresholds, calibration, transform
   chain, SHA-256) with :func:`medvision.models.registry.save_model`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data.dataloader import DataLoader
from monai.data.dataset import CacheDataset
from monai.losses.focal_loss import FocalLoss
from numpy.typing import NDArray
from torch.utils.data import WeightedRandomSampler

from medvision import __version__
from medvision.calibration.operating_point import threshold_for_sensitivity
from medvision.calibration.scaling import (
    Calibrator,
    TemperatureScaling,
    calibrator_from_dict,
    fit_best_calibrator,
)
from medvision.choices import parse_choice
from medvision.data.manifest import ManifestRow, read_manifest
from medvision.modality import FINDINGS, Modality
from medvision.models.networks import build_network
from medvision.models.registry import ModelEntry, Task, save_model
from medvision.training.imbalance import balanced_sampler_weights, class_balanced_weights
from medvision.training.loop import (
    EpochRecord,
    LossFunction,
    auroc_per_finding,
    predict_logits,
    seed_everything,
    select_device,
    train_classifier,
)
from medvision.transforms import default_chain
from medvision.transforms.loading import study_item

#: Modalities this trainer serves (one image per study, one logit per finding).
IMAGE_CLASSIFIER_MODALITIES = (Modality.CXR, Modality.FUNDUS)


class LossKind(StrEnum):
    """Training loss of a classifier."""

    BCE = "bce"
    FOCAL = "focal"
    CLASS_BALANCED_FOCAL = "class_balanced_focal"


def default_network(modality: Modality, outputs: int) -> dict[str, Any]:
    """Return the default network description for a modality's classifier.

    A compact DenseNet (Huang et al. 2017) sized for CPU training on phantoms.
    """
    channels = 3 if modality == Modality.FUNDUS else 1
    return {
        "architecture": "densenet",
        "spatial_dims": 2,
        "in_channels": channels,
        "out_channels": outputs,
        "init_features": 16,
        "growth_rate": 12,
        "block_config": [3, 6, 8],
    }


@dataclass(frozen=True)
class TrainOptions:
    """Options of ``medvision train`` for an image classifier.

    Attributes
    ----------
    modality, manifest, out
        What to train on and where the model goes.
    epochs, batch_size, learning_rate, seed
        The run; the same seed on CPU repeats it exactly.
    loss, balanced_sampler
        Imbalance handling (use one of a class-balanced loss or the sampler).
    target_sensitivity
        Sensitivity each finding's threshold must reach on the tuning split.
    device
        ``auto``, ``cpu`` or ``cuda``.
    max_studies
        Use at most this many studies per split (for quick runs and tests).
    network
        Network description; the modality's default when empty.
    name, version
        Model name and version for the registry.
    """

    modality: Modality
    manifest: Path
    out: Path
    epochs: int = 12
    batch_size: int = 16
    learning_rate: float = 2e-3
    seed: int = 0
    loss: LossKind = LossKind.CLASS_BALANCED_FOCAL
    balanced_sampler: bool = False
    target_sensitivity: float = 0.90
    device: str = "auto"
    max_studies: int | None = None
    network: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    version: str = __version__

    def __post_init__(self) -> None:
        """Check the options (messages are shown to the user as they are)."""
        if self.modality not in IMAGE_CLASSIFIER_MODALITIES:
            served = ", ".join(m.value for m in IMAGE_CLASSIFIER_MODALITIES)
            raise ValueError(
                f"this trainer serves {served}; {self.modality.value} needs its own trainer"
            )
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--epochs and --batch-size must be at least 1")
        if not 0.0 < self.target_sensitivity < 1.0:
            raise ValueError(
                f"--target-sensitivity must be in (0, 1), got {self.target_sensitivity}"
            )
        object.__setattr__(self, "loss", parse_choice(LossKind, self.loss, "loss"))


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced."""

    entry: ModelEntry
    epochs: list[EpochRecord]
    test_auroc: dict[str, float]


def _rows(options: TrainOptions, split: str, findings: Sequence[str]) -> list[ManifestRow]:
    rows = [
        row
        for row in read_manifest(options.manifest)
        if row.modality == options.modality
        and row.split == split
        and all(name in row.labels for name in findings)
    ]
    return rows[: options.max_studies] if options.max_studies else rows


def _items(
    rows: Sequence[ManifestRow], manifest: Path, findings: Sequence[str]
) -> list[dict[str, Any]]:
    return [
        {
            **study_item(row, manifest),
            "label": np.array([row.labels[name] for name in findings], dtype=np.float32),
        }
        for row in rows
    ]


def _labels(rows: Sequence[ManifestRow], findings: Sequence[str]) -> NDArray[np.int64]:
    return np.array([[row.labels[name] for name in findings] for row in rows], dtype=np.int64)


def _loss(options: TrainOptions, labels: NDArray[np.int64]) -> LossFunction:
    if options.loss == LossKind.BCE:
        return torch.nn.BCEWithLogitsLoss()
    if options.loss == LossKind.FOCAL:
        return FocalLoss(gamma=2.0, use_softmax=False)
    positives = labels.sum(axis=0).tolist()
    negatives = (len(labels) - labels.sum(axis=0)).tolist()
    return class_balanced_weights(positives, negatives).focal_loss(gamma=2.0)


#: Cross-validation folds when choosing a calibration method.
CALIBRATION_FOLDS = 5


def _fit_calibrator(logits: NDArray[np.float32], labels: NDArray[np.float32]) -> Calibrator:
    """Choose and fit a calibrator; with too few cases to compare methods, temperature scaling.

    Comparing methods needs :data:`CALIBRATION_FOLDS` cases of each class; below
    that only the one-parameter temperature scaling (Guo et al. 2017) is fitted.
    """
    positives = int(labels.sum())
    if min(positives, len(labels) - positives) < CALIBRATION_FOLDS:
        return TemperatureScaling().fit(logits, labels)
    return fit_best_calibrator(logits, labels, folds=CALIBRATION_FOLDS).calibrator


def train_image_classifier(options: TrainOptions, progress: bool = True) -> TrainingResult:
    """Train, calibrate, pick thresholds and register a classifier (see the module docstring).

    Raises
    ------
    ValueError
        If a split the run needs has no study, or a finding has no positive case in
        the calibration or tuning split.
    """
    seed_everything(options.seed)
    findings = FINDINGS[options.modality]
    device = select_device(options.device)
    chain = default_chain(options.modality)
    splits = {s: _rows(options, s, findings) for s in ("train", "tune", "calibration", "test")}
    for split in ("train", "tune", "calibration"):
        if not splits[split]:
            raise ValueError(
                f"no {options.modality.value} study in the {split} split of {options.manifest}"
            )
    train_labels = _labels(splits["train"], findings)
    train_set = CacheDataset(
        _items(splits["train"], options.manifest, findings),
        chain.build(training=True),
        progress=progress,
        num_workers=0,
    )
    sampler = None
    if options.balanced_sampler:
        weights = balanced_sampler_weights(train_labels)
        sampler = WeightedRandomSampler(
            weights.tolist(),
            num_samples=len(weights),
            replacement=True,
            generator=torch.Generator().manual_seed(options.seed),
        )
    train_loader = DataLoader(
        train_set,
        batch_size=options.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=0,
        generator=torch.Generator().manual_seed(options.seed),
    )
    evaluation = chain.build(training=False)

    def loader(split: str) -> DataLoader:
        dataset = CacheDataset(
            _items(splits[split], options.manifest, findings),
            evaluation,
            progress=progress,
            num_workers=0,
        )
        return DataLoader(dataset, batch_size=options.batch_size, shuffle=False, num_workers=0)

    tune_loader = loader("tune")
    network_description = options.network or default_network(options.modality, len(findings))
    network = build_network(network_description)
    name = options.name or f"{options.modality.value}-densenet"
    records = train_classifier(
        network,
        train_loader,
        tune_loader,
        _loss(options, train_labels),
        findings,
        epochs=options.epochs,
        learning_rate=options.learning_rate,
        device=device,
        metrics_log=options.out / f"{name}.metrics.jsonl",
        progress=progress,
    )
    calibration_logits, calibration_labels = predict_logits(network, loader("calibration"), device)
    tune_logits, tune_labels = predict_logits(network, tune_loader, device)
    calibration: dict[str, dict[str, Any]] = {}
    thresholds: dict[str, float] = {}
    for index, finding in enumerate(findings):
        calibrator = _fit_calibrator(calibration_logits[:, index], calibration_labels[:, index])
        calibration[finding] = calibrator.to_dict()
        probabilities = calibrator.transform(tune_logits[:, index])
        point = threshold_for_sensitivity(
            probabilities, tune_labels[:, index], target=options.target_sensitivity
        )
        thresholds[finding] = float(point.threshold)
    entry = ModelEntry(
        name=name,
        version=options.version,
        modality=options.modality,
        findings=findings,
        task=Task.CLASSIFICATION,
        network=network_description,
        transforms=chain.describe(),
        input_size=tuple(int(v) for v in getattr(chain, "input_size", ())),
        thresholds=thresholds,
        calibration=calibration,
        model_card=f"model_cards/{name}.md",
    )
    written = save_model(network.to("cpu"), entry, options.out)
    test_auroc: dict[str, float] = {}
    if splits["test"]:
        test_logits, test_labels = predict_logits(network, loader("test"), torch.device("cpu"))
        test_auroc = auroc_per_finding(test_logits, test_labels, findings)
    return TrainingResult(entry=written, epochs=records, test_auroc=test_auroc)


def calibrated_probabilities(entry: ModelEntry, logits: NDArray[np.float32]) -> NDArray[np.float64]:
    """Return calibrated probabilities ``(studies, findings)`` for a model's raw logits."""
    columns = [
        calibrator_from_dict(entry.calibration[finding]).transform(logits[:, index])
        for index, finding in enumerate(entry.findings)
    ]
    return np.stack(columns, axis=1)
