import math

import numpy as np
import pytest

from medvision.calibration.operating_point import (
    OperatingPoint,
    operating_point_at,
    threshold_for_sensitivity,
)
from medvision.statistics import wilson_interval

# Five positives and six negatives; the negative at 0.75 outranks two positives.
PROBABILITIES = [0.9, 0.8, 0.7, 0.6, 0.4, 0.75, 0.5, 0.3, 0.2, 0.1, 0.05]
LABELS = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]


def test_threshold_for_80_percent_sensitivity_is_the_fourth_highest_positive() -> None:
    point = threshold_for_sensitivity(PROBABILITIES, LABELS, target=0.8)
    assert point == OperatingPoint(
        threshold=0.6,
        sensitivity=0.8,
        specificity=5 / 6,
        sensitivity_ci=wilson_interval(4, 5),
        specificity_ci=wilson_interval(5, 6),
        true_positives=4,
        false_negatives=1,
        true_negatives=5,
        false_positives=1,
        confidence=0.95,
    )


def test_threshold_for_90_percent_sensitivity_needs_every_positive_of_five() -> None:
    point = threshold_for_sensitivity(PROBABILITIES, LABELS, target=0.9)
    assert (point.threshold, point.sensitivity) == (0.4, 1.0)
    counts = (
        point.true_positives,
        point.false_negatives,
        point.true_negatives,
        point.false_positives,
    )
    assert counts == (5, 0, 4, 2)


def test_chosen_threshold_is_the_highest_that_reaches_the_target() -> None:
    point = threshold_for_sensitivity(PROBABILITIES, LABELS, target=0.8)
    above = operating_point_at(PROBABILITIES, LABELS, math.nextafter(point.threshold, 1.0))
    assert above.sensitivity < 0.8 <= point.sensitivity


def test_target_reached_exactly_by_a_fraction_is_not_rounded_up() -> None:
    # 0.7 * 10 is 7.000000000000001 in floating point; 7 of 10 positives must suffice.
    probabilities = [(k + 1) / 10 for k in range(10)] + [0.05]
    point = threshold_for_sensitivity(probabilities, [1] * 10 + [0], target=0.7)
    assert (point.threshold, point.true_positives) == (0.4, 7)


def test_cases_tied_at_the_threshold_are_all_flagged() -> None:
    # k = 2 of 4 positives gives 0.6; the second positive at 0.6 and the negative
    # at 0.6 are flagged too, so sensitivity is 3/4 rather than 2/4.
    point = threshold_for_sensitivity([0.9, 0.6, 0.6, 0.3, 0.6, 0.1], [1, 1, 1, 1, 0, 0], 0.5)
    assert point.threshold == 0.6
    assert (point.true_positives, point.false_positives, point.sensitivity) == (3, 1, 0.75)


def test_target_of_one_takes_the_lowest_positive() -> None:
    point = threshold_for_sensitivity(PROBABILITIES, LABELS, target=1.0)
    assert point.threshold == 0.4


def test_no_positive_case_is_refused() -> None:
    with pytest.raises(ValueError, match="the tuning data has no positive case"):
        threshold_for_sensitivity([0.2, 0.4], [0, 0])


def test_no_negative_case_is_refused() -> None:
    with pytest.raises(ValueError, match="got 2 positive and 0 negative"):
        threshold_for_sensitivity(np.array([0.2, 0.4]), np.array([1, 1]))


@pytest.mark.parametrize("target", [0.0, -0.1, 1.01])
def test_target_outside_zero_to_one_is_refused(target: float) -> None:
    with pytest.raises(ValueError, match=r"target sensitivity must be in \(0, 1\]"):
        threshold_for_sensitivity(PROBABILITIES, LABELS, target=target)


def test_threshold_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\], got 1.5"):
        operating_point_at(PROBABILITIES, LABELS, 1.5)
