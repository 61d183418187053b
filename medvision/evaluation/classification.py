"""Discrimination figures of a binary score: AUROC, AUPRC, sensitivity at a fixed specificity.

Used to compare training set-ups (plain BCE vs imbalance-aware losses) and to
report held-out performance of the bundled models. Scores may be logits or
probabilities: every figure here depends only on their order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.metrics import average_precision_score, roc_auc_score

from medvision.calibration.metrics import binary_scores_and_labels


def sensitivity_at_specificity(scores: ArrayLike, labels: ArrayLike, specificity: float) -> float:
    """Return the highest sensitivity of any threshold whose specificity is ``>= specificity``.

    A case is called positive when its score is ``>=`` the threshold. Thresholds
    are the observed scores (and +inf, which calls nothing positive), so the
    figure is exact for the data, with no interpolation of the ROC curve.

    Parameters
    ----------
    scores
        One score per case, higher meaning more likely positive.
    labels
        0 or 1 per case; both classes must be present.
    specificity
        Required specificity, in (0, 1].

    Raises
    ------
    ValueError
        If ``specificity`` is outside (0, 1] or a class is missing.
    """
    if not 0.0 < specificity <= 1.0:
        raise ValueError(f"specificity must be in (0, 1], got {specificity}")
    values, targets = binary_scores_and_labels(scores, labels, probabilities=False)
    negatives = np.sort(values[targets == 0])
    positives = values[targets == 1]
    if negatives.size == 0 or positives.size == 0:
        raise ValueError("sensitivity at a specificity needs positive and negative cases")
    # At threshold t, specificity = share of negatives with score < t. The lowest
    # admissible threshold gives the highest sensitivity: it is the smallest score
    # above the k-th lowest negative, where k negatives must stay below it.
    needed = int(np.ceil(specificity * negatives.size - 1e-12))
    if needed == 0:
        return 1.0
    floor = negatives[needed - 1]
    return float(np.mean(positives > floor))


def average_precision(scores: ArrayLike, labels: ArrayLike) -> float:
    """Return the area under the precision-recall curve as average precision.

    Delegates to :func:`sklearn.metrics.average_precision_score` (step-wise, no
    interpolation). Its chance level is the prevalence, not 0.5.
    """
    values, targets = binary_scores_and_labels(scores, labels, probabilities=False)
    return float(average_precision_score(targets, values))


@dataclass(frozen=True)
class Discrimination:
    """Discrimination of one finding on one set of cases.

    Attributes
    ----------
    cases, positives
        Counts.
    auroc
        Area under the ROC curve.
    auprc
        Average precision (area under the precision-recall curve).
    sensitivity_at_90_specificity
        :func:`sensitivity_at_specificity` at 0.90.
    """

    cases: int
    positives: int
    auroc: float
    auprc: float
    sensitivity_at_90_specificity: float


def discrimination(scores: ArrayLike, labels: ArrayLike) -> Discrimination:
    """Return :class:`Discrimination` of ``scores`` against 0/1 ``labels``.

    Raises
    ------
    ValueError
        If a class is missing (no figure here is defined then).
    """
    values, targets = binary_scores_and_labels(scores, labels, probabilities=False)
    positives = int(targets.sum())
    if positives in (0, targets.size):
        raise ValueError("discrimination needs positive and negative cases")
    return Discrimination(
        cases=int(targets.size),
        positives=positives,
        auroc=float(roc_auc_score(targets, values)),
        auprc=average_precision(values, targets),
        sensitivity_at_90_specificity=sensitivity_at_specificity(values, targets, 0.90),
    )
