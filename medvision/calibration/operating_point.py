"""Operating points: the threshold on a calibrated probability that turns it into a finding.

A case is flagged (finding reported) when its probability is greater than or
equal to the threshold. Thresholds are chosen on a tuning split and reported
with their sensitivity and specificity and Wilson 95 % intervals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from medvision.calibration.metrics import binary_scores_and_labels
from medvision.statistics import wilson_interval


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold and how it performs on the data it was measured on.

    Attributes
    ----------
    threshold
        A case is flagged when its probability is ``>= threshold``.
    sensitivity, specificity
        ``tp / (tp + fn)`` and ``tn / (tn + fp)``.
    sensitivity_ci, specificity_ci
        Wilson score intervals (:func:`medvision.statistics.wilson_interval`)
        at ``confidence``.
    true_positives, false_negatives, true_negatives, false_positives
        The counts behind them.
    confidence
        Confidence level of the intervals.
    """

    threshold: float
    sensitivity: float
    specificity: float
    sensitivity_ci: tuple[float, float]
    specificity_ci: tuple[float, float]
    true_positives: int
    false_negatives: int
    true_negatives: int
    false_positives: int
    confidence: float


def operating_point_at(
    probabilities: ArrayLike, labels: ArrayLike, threshold: float, confidence: float = 0.95
) -> OperatingPoint:
    """Return the operating point of ``threshold`` on the given cases.

    Parameters
    ----------
    probabilities
        Calibrated probability of the finding, one per case.
    labels
        0 or 1 per case.
    threshold
        In [0, 1]; a case is flagged when its probability is ``>= threshold``.
    confidence
        Confidence level of the Wilson intervals.

    Returns
    -------
    OperatingPoint
        Counts, sensitivity and specificity with their intervals.

    Raises
    ------
    ValueError
        If ``threshold`` is outside [0, 1], the cases include no positive or no
        negative (sensitivity or specificity would be undefined), or the inputs
        fail :func:`~medvision.calibration.metrics.binary_scores_and_labels`.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    values, targets = binary_scores_and_labels(probabilities, labels, probabilities=True)
    positives = int(targets.sum())
    negatives = targets.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError(
            "an operating point needs positive and negative cases to measure sensitivity "
            f"and specificity, got {positives} positive and {negatives} negative"
        )
    flagged = values >= threshold
    true_positives = int(np.count_nonzero(flagged & (targets == 1)))
    false_positives = int(np.count_nonzero(flagged & (targets == 0)))
    true_negatives = negatives - false_positives
    return OperatingPoint(
        threshold=float(threshold),
        sensitivity=true_positives / positives,
        specificity=true_negatives / negatives,
        sensitivity_ci=wilson_interval(true_positives, positives, confidence),
        specificity_ci=wilson_interval(true_negatives, negatives, confidence),
        true_positives=true_positives,
        false_negatives=positives - true_positives,
        true_negatives=true_negatives,
        false_positives=false_positives,
        confidence=confidence,
    )


def threshold_for_sensitivity(
    probabilities: ArrayLike, labels: ArrayLike, target: float = 0.90, confidence: float = 0.95
) -> OperatingPoint:
    """Return the operating point with the highest threshold that reaches ``target`` sensitivity.

    With ``P`` positive cases, ``k`` is the smallest count with ``k / P >= target``
    and the threshold is the ``k``-th highest probability among the positives:
    any higher threshold flags fewer than ``k`` positives, since a case is
    flagged when its probability is ``>= threshold``. Every case tied at the
    threshold is flagged, so ties can lift the achieved sensitivity (and lower
    the specificity) above what the target alone asks. The result measures the
    tuning data it was chosen on: confirm it on a separate test split.

    Parameters
    ----------
    probabilities
        Calibrated probability of the finding, one per tuning case.
    labels
        0 or 1 per case.
    target
        Sensitivity to reach, in (0, 1].
    confidence
        Confidence level of the Wilson intervals.

    Returns
    -------
    OperatingPoint
        The threshold, achieved sensitivity and specificity, Wilson intervals
        and counts.

    Raises
    ------
    ValueError
        If ``target`` is outside (0, 1], the data has no positive case (no
        sensitivity to reach) or no negative case, or the inputs fail
        :func:`~medvision.calibration.metrics.binary_scores_and_labels`.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target sensitivity must be in (0, 1], got {target}")
    values, targets = binary_scores_and_labels(probabilities, labels, probabilities=True)
    positive_scores = np.sort(values[targets == 1])[::-1]
    if positive_scores.size == 0:
        raise ValueError(
            "cannot choose a threshold for a target sensitivity: the tuning data has no "
            "positive case"
        )
    counts = np.arange(1, positive_scores.size + 1)
    needed = int(counts[counts / positive_scores.size >= target][0])
    threshold = float(positive_scores[needed - 1])
    return operating_point_at(values, targets, threshold, confidence)
