"""Sensitivity, specificity, PPV, NPV and their intervals, against statsmodels and by hand."""

from __future__ import annotations

import math

import pytest
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint

from validation.binary import (
    ConfusionCounts,
    Estimate,
    binary_metrics,
    confusion_counts,
    proportion,
    proportion_difference,
)


def test_the_table_counts_each_cell() -> None:
    counts = confusion_counts([1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0])
    assert counts == ConfusionCounts(tp=2, fp=1, tn=2, fn=1)
    assert (counts.n, counts.prevalence) == (6, 0.5)
    with pytest.raises(ValueError, match="3 decisions but 2 labels"):
        confusion_counts([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        confusion_counts([1, 0], [1, 2])


@pytest.mark.parametrize(
    ("method", "statsmodels_method"), [("wilson", "wilson"), ("clopper_pearson", "beta")]
)
@pytest.mark.parametrize("confidence", [0.95, 0.90])
def test_every_interval_equals_statsmodels(
    method: str, statsmodels_method: str, confidence: float
) -> None:
    counts = ConfusionCounts(tp=87, fp=23, tn=177, fn=13)
    metrics = binary_metrics(counts, method, confidence)
    cells = {
        "sensitivity": (87, 100),
        "specificity": (177, 200),
        "ppv": (87, 110),
        "npv": (177, 190),
    }
    for name, (successes, trials) in cells.items():
        low, high = proportion_confint(
            successes, trials, alpha=1 - confidence, method=statsmodels_method
        )
        assert metrics[name].value == successes / trials
        assert metrics[name].ci_low == pytest.approx(low, abs=1e-9)
        assert metrics[name].ci_high == pytest.approx(high, abs=1e-9)


def test_ppv_and_npv_at_the_intended_prevalence_follow_bayes_rule_at_the_interval_corners() -> None:
    counts = ConfusionCounts(tp=90, fp=20, tn=180, fn=10)
    metrics = binary_metrics(counts, intended_prevalence=0.05)
    sens, spec = metrics["sensitivity"], metrics["specificity"]
    ppv = metrics["ppv_at_intended_prevalence"]
    assert ppv.value == pytest.approx(0.9 * 0.05 / (0.9 * 0.05 + 0.1 * 0.95))
    assert ppv.ci_low == pytest.approx(
        sens.ci_low * 0.05 / (sens.ci_low * 0.05 + (1 - spec.ci_low) * 0.95)
    )
    npv = metrics["npv_at_intended_prevalence"]
    assert npv.value == pytest.approx(0.9 * 0.95 / (0.9 * 0.95 + 0.1 * 0.05))
    assert npv.ci_low <= npv.value <= npv.ci_high
    assert ppv.ci_low <= ppv.value <= ppv.ci_high
    with pytest.raises(ValueError, match=r"intended-use prevalence must be in \(0, 1\), got 1.5"):
        binary_metrics(counts, intended_prevalence=1.5)


def test_a_proportion_without_trials_is_nan_and_excludes_nothing() -> None:
    empty = proportion(0, 0)
    assert math.isnan(empty.value)
    assert (empty.ci_low, empty.ci_high) == (0.0, 1.0)
    no_negatives = binary_metrics(ConfusionCounts(tp=3, fp=0, tn=0, fn=1))
    assert math.isnan(no_negatives["specificity"].value)
    three_of_four = proportion(3, 4)
    assert no_negatives["sensitivity"] == Estimate(
        0.75, three_of_four.ci_low, three_of_four.ci_high
    )
    with pytest.raises(ValueError, match="Did you mean 'wilson'"):
        proportion(1, 2, "wilsn")


@pytest.mark.parametrize(
    ("a", "n", "b", "m"), [(45, 50, 170, 200), (12, 30, 90, 100), (0, 10, 5, 40), (10, 10, 7, 9)]
)
def test_the_difference_of_two_proportions_has_newcombe_s_interval_as_statsmodels(
    a: int, n: int, b: int, m: int
) -> None:
    estimate = proportion_difference(a, n, b, m)
    low, high = confint_proportions_2indep(a, n, b, m, method="newcomb", compare="diff")
    assert estimate.value == pytest.approx(a / n - b / m, abs=1e-12)
    assert estimate.ci_low == pytest.approx(low, abs=1e-9)
    assert estimate.ci_high == pytest.approx(high, abs=1e-9)
    missing = proportion_difference(1, 0, 3, 4)
    assert math.isnan(missing.value) and (missing.ci_low, missing.ci_high) == (-1.0, 1.0)
