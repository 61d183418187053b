import numpy as np
import pytest

from medvision.calibration.metrics import (
    ReliabilityBin,
    brier_score,
    expected_calibration_error,
    reliability_curve,
)


def test_ece_is_zero_when_every_bin_predicts_its_observed_rate() -> None:
    # Bin [0.2, 0.3): four cases at 0.25, one positive; bin [0.7, 0.8): four at 0.75, three.
    probabilities = [0.25] * 4 + [0.75] * 4
    labels = [1, 0, 0, 0, 1, 1, 1, 0]
    assert expected_calibration_error(probabilities, labels) == 0.0


def test_ece_of_two_equally_large_bins_each_off_by_015_is_015() -> None:
    # Ten cases at 0.25 with 4 positive (|0.25 - 0.4| = 0.15) and ten at 0.75 with
    # 6 positive (|0.75 - 0.6| = 0.15); each bin holds half the cases.
    probabilities = [0.25] * 10 + [0.75] * 10
    labels = [1] * 4 + [0] * 6 + [1] * 6 + [0] * 4
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.15, abs=1e-12)


def test_ece_weights_each_bin_by_its_share_of_cases() -> None:
    # A quarter of the cases off by 0.15 and three quarters off by 0.05:
    # 0.25 * 0.15 + 0.75 * 0.05 = 0.075.
    probabilities = [0.25] * 10 + [0.75] * 30
    labels = [1] * 4 + [0] * 6 + [1] * 24 + [0] * 6
    assert expected_calibration_error(probabilities, labels) == pytest.approx(0.075, abs=1e-12)


def test_reliability_curve_lists_non_empty_equal_width_bins_with_one_in_the_last() -> None:
    curve = reliability_curve([0.05, 0.05, 0.3, 1.0, 0.95], [0, 1, 1, 1, 0], bins=10)
    assert curve.bins == 10
    assert curve.total == 5
    assert curve.points == (
        ReliabilityBin(0.0, 0.1, 0.05, 0.5, 2),
        ReliabilityBin(0.3, 0.4, 0.3, 1.0, 1),
        ReliabilityBin(0.9, 1.0, 0.975, 0.5, 2),
    )


def test_brier_score_is_the_mean_squared_error() -> None:
    # ((0.1 - 0)^2 + (0.8 - 1)^2) / 2 = (0.01 + 0.04) / 2 = 0.025.
    assert brier_score([0.1, 0.8], [0, 1]) == pytest.approx(0.025, abs=1e-15)


@pytest.mark.parametrize(
    ("probabilities", "labels", "message"),
    [
        ([0.2, 1.2], [0, 1], r"probabilities must lie in \[0, 1\]"),
        ([0.2, np.nan], [0, 1], "probabilities must be finite"),
        ([0.2, 0.3], [0, 2], "labels must be 0 or 1"),
        ([0.2, 0.3], [0], r"must be 1-D and equally long, got shapes \(2,\) and \(1,\)"),
        ([], [], "probabilities and labels are empty"),
    ],
)
def test_metrics_refuse_unusable_input(
    probabilities: list[float], labels: list[int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        expected_calibration_error(probabilities, labels)


def test_reliability_curve_needs_at_least_one_bin() -> None:
    with pytest.raises(ValueError, match="bins must be at least 1, got 0"):
        reliability_curve([0.5], [1], bins=0)
