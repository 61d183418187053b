"""Agreement of predicted grades with the truth: quadratic weighted kappa and the confusion.

The quadratic weighted kappa (Cohen 1968) is the usual figure for diabetic
retinopathy grading (it scored the Kaggle EyePACS challenge and Gulshan et al.
2016's graders): disagreement is weighted by the squared distance between the two
grades, so calling a proliferative eye mild costs sixteen times as much as calling
it severe, and chance agreement is removed. 1 is perfect agreement, 0 chance.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score, confusion_matrix, roc_auc_score

from medvision.grading import GradeScale


def quadratic_weighted_kappa(truth: ArrayLike, predicted: ArrayLike, levels: int) -> float:
    """Return Cohen's kappa with quadratic weights over grades ``0 .. levels - 1``.

    NaN when it is undefined (every case of one grade, in truth and prediction).

    Raises
    ------
    ValueError
        If the lengths differ or there is no case.
    """
    expected = np.asarray(truth, dtype=np.int64).ravel()
    given = np.asarray(predicted, dtype=np.int64).ravel()
    if expected.size != given.size or expected.size == 0:
        raise ValueError(f"{expected.size} true and {given.size} predicted grades")
    with warnings.catch_warnings():  # undefined: NaN, as documented
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        kappa = cohen_kappa_score(expected, given, labels=list(range(levels)), weights="quadratic")
    return float(kappa)


@dataclass(frozen=True)
class GradeAgreement:
    """How the predicted grades of a set of cases agree with their true grades.

    Attributes
    ----------
    cases
        Number of cases.
    quadratic_kappa
        :func:`quadratic_weighted_kappa`.
    exact, within_one
        Share of cases graded exactly right, and at most one grade off.
    confusion
        Counts: row = true grade, column = predicted grade.
    cut_auroc
        Per cut point ``k`` of the scale, the AUROC of the probability of "grade ≥ k"
        against the truth (NaN where one class is missing).
    """

    cases: int
    quadratic_kappa: float
    exact: float
    within_one: float
    confusion: tuple[tuple[int, ...], ...]
    cut_auroc: dict[int, float]


def grade_agreement(
    truth: Sequence[int],
    predicted: Sequence[int],
    at_least: Sequence[Mapping[int, float]],
    scale: GradeScale,
) -> GradeAgreement:
    """Return the agreement of ``predicted`` with ``truth`` on ``scale``.

    Parameters
    ----------
    truth, predicted
        One grade per case.
    at_least
        Per case, the probability of each cut point (``Grade.at_least``).
    scale
        The grading scale.

    Raises
    ------
    ValueError
        If the lengths differ or there is no case.
    """
    expected = np.asarray(truth, dtype=np.int64)
    given = np.asarray(predicted, dtype=np.int64)
    if not expected.size == given.size == len(at_least) or expected.size == 0:
        raise ValueError(
            f"{expected.size} true grades, {given.size} predicted and {len(at_least)} "
            "probability sets"
        )
    levels = len(scale.levels)
    cut_auroc = {}
    for k in range(1, levels):
        target = expected >= k
        scores = [case[k] for case in at_least]
        cut_auroc[k] = (
            float(roc_auc_score(target, scores)) if 0 < target.sum() < target.size else np.nan
        )
    confusion = confusion_matrix(expected, given, labels=list(range(levels)))
    return GradeAgreement(
        cases=int(expected.size),
        quadratic_kappa=quadratic_weighted_kappa(expected, given, levels),
        exact=float(np.mean(expected == given)),
        within_one=float(np.mean(np.abs(expected - given) <= 1)),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
        cut_auroc=cut_auroc,
    )
