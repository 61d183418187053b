import math
from collections.abc import Callable

import pytest
from scipy.stats import norm

from medvision.statistics import clopper_pearson_interval, wilson_interval

Z95 = float(norm.ppf(0.975))
Interval = Callable[[int, int, float], tuple[float, float]]


def test_wilson_interval_of_8_in_10_matches_the_textbook_value() -> None:
    lower, upper = wilson_interval(8, 10)
    assert lower == pytest.approx(0.4902, abs=1e-4)
    assert upper == pytest.approx(0.9433, abs=1e-4)


def test_clopper_pearson_interval_of_8_in_10_matches_the_textbook_value() -> None:
    lower, upper = clopper_pearson_interval(8, 10)
    assert lower == pytest.approx(0.4439, abs=1e-4)
    assert upper == pytest.approx(0.9748, abs=1e-4)


def test_wilson_interval_with_no_successes_has_its_closed_form_upper_bound() -> None:
    # With p = 0 the Wilson bounds reduce to 0 and z^2 / (n + z^2).
    lower, upper = wilson_interval(0, 10)
    assert lower == 0.0
    assert upper == pytest.approx(Z95**2 / (10 + Z95**2), abs=1e-12)


def test_clopper_pearson_interval_with_no_successes_has_its_closed_form_upper_bound() -> None:
    # With x = 0 the upper bound solves (1 - u)^n = alpha / 2.
    lower, upper = clopper_pearson_interval(0, 10)
    assert lower == 0.0
    assert upper == pytest.approx(1.0 - 0.025 ** (1 / 10), abs=1e-12)


@pytest.mark.parametrize("interval", [wilson_interval, clopper_pearson_interval])
def test_intervals_are_mirror_images_for_failures_and_successes(interval: Interval) -> None:
    lower, upper = interval(3, 17, 0.9)
    mirrored_lower, mirrored_upper = interval(14, 17, 0.9)
    assert lower == pytest.approx(1.0 - mirrored_upper, abs=1e-12)
    assert upper == pytest.approx(1.0 - mirrored_lower, abs=1e-12)


@pytest.mark.parametrize("interval", [wilson_interval, clopper_pearson_interval])
def test_intervals_of_zero_trials_exclude_nothing(interval: Interval) -> None:
    assert interval(0, 0, 0.95) == (0.0, 1.0)


def test_wider_confidence_gives_a_wider_wilson_interval() -> None:
    narrow = wilson_interval(8, 10, 0.80)
    wide = wilson_interval(8, 10, 0.99)
    assert wide[0] < narrow[0] and wide[1] > narrow[1]
    assert not math.isclose(narrow[0], wide[0])


@pytest.mark.parametrize(
    ("successes", "trials", "confidence", "message"),
    [
        (1, -1, 0.95, "trials must be zero or more, got -1"),
        (11, 10, 0.95, r"successes must be between 0 and trials \(10\), got 11"),
        (-1, 10, 0.95, r"successes must be between 0 and trials \(10\), got -1"),
        (1, 10, 1.0, "confidence must be strictly between 0 and 1, got 1.0"),
        (1, 10, 0.0, "confidence must be strictly between 0 and 1, got 0.0"),
    ],
)
@pytest.mark.parametrize("interval", [wilson_interval, clopper_pearson_interval])
def test_invalid_arguments_are_refused_with_a_clear_message(
    interval: Interval, successes: int, trials: int, confidence: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        interval(successes, trials, confidence)
