"""Tests of the discrimination figures (AUROC, AUPRC, sensitivity at a specificity)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from medvision.evaluation.classification import (
    average_precision,
    discrimination,
    sensitivity_at_specificity,
)


def test_sensitivity_at_specificity_counts_positives_above_the_admissible_negative() -> None:
    negatives = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    positives = [0.95, 0.85, 0.75, 0.05]
    scores = negatives + positives
    labels = [0] * 10 + [1] * 4
    # 90 % specificity: 9 of 10 negatives below the threshold, so it must exceed 0.8.
    assert sensitivity_at_specificity(scores, labels, 0.90) == pytest.approx(2 / 4)
    # 70 %: 7 negatives below, threshold above 0.6.
    assert sensitivity_at_specificity(scores, labels, 0.70) == pytest.approx(3 / 4)
    # 100 %: above every negative.
    assert sensitivity_at_specificity(scores, labels, 1.0) == pytest.approx(1 / 4)


def test_sensitivity_at_specificity_matches_the_roc_curve_of_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    scores = rng.normal(labels * 1.2, 1.0)
    fpr, tpr, _ = roc_curve(labels, scores)
    expected = float(tpr[fpr <= 0.10].max())
    assert sensitivity_at_specificity(scores, labels, 0.90) == pytest.approx(expected)


def test_ties_between_a_positive_and_the_admissible_negative_do_not_count() -> None:
    assert sensitivity_at_specificity([0.5, 0.5, 0.1], [0, 1, 0], 1.0) == 0.0


def test_discrimination_reports_counts_and_figures() -> None:
    result = discrimination([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    assert (result.cases, result.positives) == (4, 2)
    assert result.auroc == pytest.approx(0.75)
    assert result.auprc == pytest.approx(average_precision([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]))
    assert result.auprc == pytest.approx((1.0 + 2 / 3) / 2)
    assert result.sensitivity_at_90_specificity == pytest.approx(0.5)


def test_one_class_only_is_refused() -> None:
    with pytest.raises(ValueError, match="positive and negative"):
        discrimination([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="specificity must be in"):
        sensitivity_at_specificity([0.1, 0.2], [0, 1], 0.0)
