"""The cluster bootstrap: ordinary with one case per cluster, wider when patients repeat."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from statsmodels.stats.proportion import confint_proportions_2indep

from medvision.statistics import wilson_interval
from validation.bootstrap import (
    cluster_bootstrap,
    cluster_bootstrap_ratios,
    percentile_interval,
    proportion_ratio,
)


def _sensitivity(scores: np.ndarray, labels: np.ndarray) -> float:
    positives = labels == 1
    return float(np.mean(scores[positives] >= 0.5)) if positives.any() else math.nan


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < labels.size else math.nan


def _data(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(size) < 0.4).astype(int)
    return rng.normal(size=size) * 0.3 + 0.4 * labels + 0.3, labels


def test_one_case_per_cluster_is_the_ordinary_bootstrap_drawn_the_same_way() -> None:
    scores, labels = _data(0, 300)
    result = cluster_bootstrap(_auroc, scores, labels, np.arange(300), resamples=500, seed=7)
    rng = np.random.default_rng(7)
    draws = [rng.integers(0, 300, 300) for _ in range(500)]
    values = [_auroc(scores[d], labels[d]) for d in draws]
    low, high = np.quantile(values, [0.025, 0.975])
    assert result.ci_low == pytest.approx(low)
    assert result.ci_high == pytest.approx(high)
    assert result.value == pytest.approx(roc_auc_score(labels, scores))
    assert (result.clusters, result.undefined) == (300, 0)


def test_patients_counted_twice_widen_the_interval_back_to_the_patients_own() -> None:
    scores, labels = _data(1, 400)
    patients = np.arange(400)
    once = cluster_bootstrap(_sensitivity, scores, labels, patients, resamples=1500, seed=1)
    twice_scores, twice_labels = np.r_[scores, scores], np.r_[labels, labels]
    naive = cluster_bootstrap(
        _sensitivity, twice_scores, twice_labels, np.arange(800), resamples=1500, seed=1
    )
    clustered = cluster_bootstrap(
        _sensitivity, twice_scores, twice_labels, np.r_[patients, patients], resamples=1500, seed=1
    )
    width = once.ci_high - once.ci_low
    # Duplicated cases look like twice the data to a case bootstrap (width / sqrt 2) ...
    assert naive.ci_high - naive.ci_low == pytest.approx(width / math.sqrt(2), rel=0.15)
    # ... but not to the cluster bootstrap, which sees 400 patients.
    assert clustered.ci_high - clustered.ci_low == pytest.approx(width, rel=0.1)
    assert clustered.clusters == 400


def test_undefined_resamples_are_counted_and_bad_input_refused() -> None:
    labels = np.array([1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    result = cluster_bootstrap(_sensitivity, np.full(10, 0.7), labels, np.arange(10), resamples=200)
    assert 0 < result.undefined < 200  # resamples without the one positive case
    with pytest.raises(ValueError, match="3 scores, 2 labels and 3 cluster identifiers"):
        cluster_bootstrap(_auroc, [0.1, 0.2, 0.3], [0, 1], [1, 2, 3])
    with pytest.raises(ValueError, match="undefined on every bootstrap resample"):
        cluster_bootstrap(_sensitivity, [0.1, 0.2], [0, 0], [1, 2], resamples=10)
    with pytest.raises(ValueError, match="resamples must be at least 1"):
        cluster_bootstrap(_sensitivity, [0.1], [1], [1], resamples=0)


def _proportion(outcomes: np.ndarray, patients: np.ndarray) -> tuple[float, float]:
    draws = cluster_bootstrap_ratios(
        [proportion_ratio(outcomes, np.ones(outcomes.size))], patients, resamples=2000
    )
    return percentile_interval(draws[:, 0])


def _difference(
    outcomes: np.ndarray, group: np.ndarray, patients: np.ndarray
) -> tuple[float, float]:
    draws = cluster_bootstrap_ratios(
        [proportion_ratio(outcomes, group), proportion_ratio(outcomes, ~group)], patients
    )
    return percentile_interval(draws[:, 0] - draws[:, 1])


def test_the_shared_resamples_widen_a_proportion_for_repeated_patients_only() -> None:
    rng = np.random.default_rng(3)
    outcomes = (rng.random(300) < 0.8).astype(int)
    patients = np.arange(300)
    low, high = _proportion(outcomes, patients)
    wilson = wilson_interval(int(outcomes.sum()), 300)
    assert high - low == pytest.approx(wilson[1] - wilson[0], rel=0.12)
    twice = np.r_[outcomes, outcomes]
    naive = wilson_interval(int(twice.sum()), 600)
    low2, high2 = _proportion(twice, np.r_[patients, patients])
    assert high2 - low2 == pytest.approx(high - low, rel=0.12)  # 300 patients, not 600 cases
    assert high2 - low2 > 1.25 * (naive[1] - naive[0])


def test_ratios_on_shared_resamples_equal_their_own_resampled_sums() -> None:
    rng = np.random.default_rng(4)
    patients = rng.integers(0, 30, 120)
    successes = rng.integers(0, 2, 120).astype(float)
    chosen = rng.random(120) < 0.6
    draws = cluster_bootstrap_ratios(
        [proportion_ratio(successes, chosen), proportion_ratio(successes, ~chosen)],
        patients,
        resamples=5,
        seed=9,
        chunk=2,
    )
    # The same draws by hand: each resample picks as many patients as there are.
    generator = np.random.default_rng(9)
    _, index = np.unique(patients, return_inverse=True)
    count = int(index.max()) + 1
    for row in draws:
        weights = np.bincount(generator.integers(0, count, count), minlength=count)[index]
        for column, side in enumerate((chosen, ~chosen)):
            expected = (weights * successes * side).sum() / (weights * side).sum()
            assert row[column] == pytest.approx(expected)


def test_a_difference_interval_resamples_patients_on_both_sides() -> None:
    rng = np.random.default_rng(3)
    outcome = (rng.random(400) < np.where(np.arange(400) < 150, 0.7, 0.85)).astype(int)
    group = np.arange(400) < 150
    single = _difference(outcome, group, np.arange(400))
    low, high = confint_proportions_2indep(
        outcome[group].sum(), group.sum(), outcome[~group].sum(), (~group).sum(), method="newcomb"
    )
    # One trial per patient: close to Newcombe's interval.
    assert single == pytest.approx((low, high), abs=0.02)
    # Every patient twice: the same information, so about the same interval.
    twice = _difference(np.tile(outcome, 2), np.tile(group, 2), np.tile(np.arange(400), 2))
    assert twice == pytest.approx(single, abs=0.02)
    # Counted as independent, the copies would narrow it by about 1/sqrt(2).
    naive = _difference(np.tile(outcome, 2), np.tile(group, 2), np.arange(800))
    assert naive[1] - naive[0] < 0.8 * (twice[1] - twice[0])


def test_shared_resamples_refuse_mismatched_arrays_and_an_undefined_statistic() -> None:
    with pytest.raises(ValueError, match="2 numerators and 2 denominators for 3 cluster"):
        cluster_bootstrap_ratios([proportion_ratio([1, 0], [True, True])], ["a", "b", "c"])
    with pytest.raises(ValueError, match="resamples must be at least 1"):
        cluster_bootstrap_ratios([], ["a"], resamples=0)
    with pytest.raises(ValueError, match="undefined on every bootstrap resample"):
        percentile_interval([np.nan, np.nan])
