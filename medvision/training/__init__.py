"""Training of every model family, and the one entry point ``medvision train`` calls.

- chest X-ray, fundus: :func:`medvision.training.classifier.train_image_classifier`;
- mammography: :func:`medvision.training.mammography.train_mammography` (per view,
  aggregated per breast);
- CT: :func:`medvision.training.segmenter.train_ct_segmenter` (nodule segmenter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medvision.calibration.grade_thresholds import GradeCalibration
from medvision.calibration.refit import FindingCalibration
from medvision.modality import Modality
from medvision.models.registry import ModelEntry
from medvision.training.classifier import TrainOptions


@dataclass(frozen=True)
class TrainedModel:
    """What any trainer produced, for reporting.

    Attributes
    ----------
    entry
        The registry entry as written (calibrated, thresholds set).
    calibration
        Per finding, what calibration did.
    grading
        For a grading model, what choosing its cut points' thresholds did.
    test_figures
        Held-out figures on the manifest's ``test`` split, by name (e.g.
        ``"nodule AUROC"``, ``"per-breast AUROC"``, ``"mean Dice"``); empty without
        a test split.
    kept_epoch
        The epoch whose weights were kept.
    epochs_run
        Epochs trained (fewer than asked for when a time limit cut the run short).
    """

    entry: ModelEntry
    calibration: dict[str, FindingCalibration]
    test_figures: dict[str, float]
    kept_epoch: int
    epochs_run: int
    grading: GradeCalibration | None = None


def train_model(options: TrainOptions, progress: bool = True) -> TrainedModel:
    """Train the model family of ``options.modality`` (see the module docstring)."""
    if options.modality == Modality.CT:
        from medvision.training.segmenter import train_ct_segmenter

        segmenter = train_ct_segmenter(options, progress)
        figures: dict[str, float] = {}
        evaluation = segmenter.test_evaluation
        if evaluation is not None:
            figures = {
                "mean Dice": evaluation.mean_dice,
                f"sensitivity (nodules >= {evaluation.min_diameter_mm:g} mm) at <= "
                f"{evaluation.max_false_positives_per_scan:g} FP/scan": (
                    evaluation.sensitivity_at_max_false_positives
                ),
            }
        return TrainedModel(
            segmenter.entry,
            segmenter.calibration,
            figures,
            segmenter.kept_epoch,
            len(segmenter.epochs),
        )
    if options.modality == Modality.MAMMO:
        from medvision.training.mammography import train_mammography

        mammography = train_mammography(options, progress)
        figures = {f"{name} AUROC": value for name, value in mammography.test_auroc.items()}
        figures["per-breast AUROC"] = mammography.per_breast_test_auroc
        return TrainedModel(
            mammography.entry,
            mammography.calibration,
            figures,
            _kept(mammography.epochs),
            len(mammography.epochs),
        )
    from medvision.training.classifier import train_image_classifier

    classifier = train_image_classifier(options, progress)
    figures = {f"{name} AUROC": value for name, value in classifier.test_auroc.items()}
    return TrainedModel(
        classifier.entry,
        classifier.calibration,
        figures,
        classifier.kept_epoch,
        len(classifier.epochs),
        classifier.grading,
    )


def _kept(epochs: Sequence[object]) -> int:
    """Return the epoch ``train_classifier`` kept: the best mean tuning AUROC."""
    from medvision.training.loop import EpochRecord, mean_tune_auroc

    records = [record for record in epochs if isinstance(record, EpochRecord)]
    if not records:
        return 0
    return max(records, key=mean_tune_auroc).epoch


__all__ = ["TrainOptions", "TrainedModel", "train_model"]
