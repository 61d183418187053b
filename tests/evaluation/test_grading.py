import math

import numpy as np
import pytest

from medvision.evaluation.grading import grade_agreement, quadratic_weighted_kappa
from medvision.grading import DR_GRADE


def test_kappa_is_one_for_perfect_agreement_and_weighs_distance_quadratically() -> None:
    truth = [0, 1, 2, 3, 4]
    assert quadratic_weighted_kappa(truth, truth, 5) == pytest.approx(1.0)
    # By hand: observed weighted disagreement over the chance disagreement, with weights
    # (i - j)^2 / 16. One case off by one: observed 1/16 / 5; chance: every pair of the
    # uniform margins, mean (i - j)^2 = 4, so 4/16.
    off_by_one = quadratic_weighted_kappa(truth, [0, 1, 2, 3, 3], 5)
    margins = np.outer([1, 1, 1, 1, 1], [1, 1, 1, 2, 0]) / 25.0
    weights = np.subtract.outer(np.arange(5), np.arange(5)) ** 2 / 16.0
    expected = 1.0 - (1.0 / 16.0 / 5.0) / float((weights * margins).sum())
    assert off_by_one == pytest.approx(expected)
    # Off by four costs sixteen times as much as off by one.
    off_by_four = quadratic_weighted_kappa(truth, [4, 1, 2, 3, 4], 5)
    assert off_by_four < off_by_one
    assert math.isnan(quadratic_weighted_kappa([2, 2], [2, 2], 5))
    with pytest.raises(ValueError, match="3 true and 2 predicted grades"):
        quadratic_weighted_kappa([0, 1, 2], [0, 1], 5)


def test_agreement_counts_the_confusion_and_each_cut_points_auroc() -> None:
    truth = [0, 0, 1, 2, 3, 4]
    predicted = [0, 1, 1, 2, 2, 4]
    at_least = [{k: (t + 0.5) / 5.0 for k in range(1, 5)} for t in truth]
    at_least[0][1] = 0.9  # one grade-0 case ranks above the grade-1 case at "grade >= 1"
    agreement = grade_agreement(truth, predicted, at_least, DR_GRADE)
    assert agreement.cases == 6
    assert agreement.exact == pytest.approx(4 / 6)
    assert agreement.within_one == 1.0
    assert agreement.confusion == (
        (1, 1, 0, 0, 0),
        (0, 1, 0, 0, 0),
        (0, 0, 1, 0, 0),
        (0, 0, 1, 0, 0),
        (0, 0, 0, 0, 1),
    )
    # grade >= 1: positives scoring 0.3, 0.5, 0.7, 0.9 against negatives at 0.1 and 0.9:
    # all four above 0.1, one tie with 0.9 (a half), of 8 pairs
    assert agreement.cut_auroc[1] == pytest.approx(4.5 / 8)
    assert agreement.cut_auroc[2] == agreement.cut_auroc[3] == agreement.cut_auroc[4] == 1.0
    with pytest.raises(ValueError, match="2 true grades, 1 predicted and 1 probability sets"):
        grade_agreement([0, 1], [0], [{}], DR_GRADE)
