"""Choose the thresholds of a grading scale's further cut points, as calibration does for findings.

A grading model's further outputs ("grade ≥ 1", "≥ 3", "≥ 4" beside ``referable_dr``;
:mod:`medvision.grading`) are trained with binary cross-entropy on phantoms where
the higher grades are rare (about 4 % of the training eyes are proliferative), so
their probabilities seldom reach one half even where they rank the eyes well. The
grade is decoded against each cut point's threshold
(:func:`medvision.grading.grade_values`); this module chooses those thresholds on
the ``tune`` and ``calibration`` splits together — the splits the findings'
thresholds come from — to maximise the quadratic weighted kappa of the decoded
grades against the true ones, by coordinate ascent (each threshold in turn over a
grid of :data:`GRID`, three rounds, from one half each; ties go to the value nearest
one half). The findings' decisions, and so which side of the finding's cut point a
study is graded on, come from the finding's calibrated probability and threshold
exactly as served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from medvision.evaluation.grading import quadratic_weighted_kappa
from medvision.grading import GradeScale, grade_values

#: Candidate thresholds of each cut point.
GRID: NDArray[np.float64] = np.round(np.arange(0.02, 0.99, 0.01), 2)
#: Rounds of coordinate ascent over the cut points.
ROUNDS = 3


@dataclass(frozen=True)
class GradeCalibration:
    """What choosing the cut points' thresholds did.

    Attributes
    ----------
    scale
        The grading scale's name.
    thresholds
        The chosen threshold of each further cut point, by output name.
    cases
        Studies of ``tune`` and ``calibration`` they were chosen on.
    kappa_at_half
        Quadratic weighted kappa there with every threshold at one half.
    kappa
        The same with the chosen thresholds.
    test_cases, test_kappa
        Studies of ``test`` and the kappa there with the chosen thresholds
        (0 and ``None`` without a test split).
    """

    scale: str
    thresholds: dict[str, float]
    cases: int
    kappa_at_half: float
    kappa: float
    test_cases: int = 0
    test_kappa: float | None = None


def fit_cut_thresholds(
    scale: GradeScale, flagged: ArrayLike, cut_probabilities: ArrayLike, truth: Sequence[int]
) -> tuple[float, ...]:
    """Return thresholds of the further cut points that maximise the quadratic weighted kappa.

    Parameters
    ----------
    scale
        The grading scale.
    flagged
        Per case, whether the finding is flagged.
    cut_probabilities
        ``(cases, cut points)``, in ``scale.cut_points`` order.
    truth
        Per case, the true grade.
    """
    levels = len(scale.levels)
    thresholds = np.full(len(scale.cut_points), 0.5)

    def kappa(candidate: NDArray[np.float64]) -> float:
        decoded = grade_values(scale, flagged, cut_probabilities, candidate.tolist())
        value = quadratic_weighted_kappa(truth, decoded, levels)
        return -np.inf if np.isnan(value) else value

    for _ in range(ROUNDS):
        for column in range(len(thresholds)):
            best, best_value = kappa(thresholds), float(thresholds[column])
            for value in GRID:
                trial = thresholds.copy()
                trial[column] = value
                score = kappa(trial)
                nearer = abs(value - 0.5) < abs(best_value - 0.5)
                if score > best or (score == best and nearer):
                    best, best_value = score, float(value)
            thresholds[column] = best_value
    return tuple(float(t) for t in thresholds)
