"""DeLong's AUROC interval, cross-checked against the kernel, scikit-learn and a bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from validation.auroc import (
    delong_auroc,
    delong_components,
    delong_kernel_components,
    obuchowski_auroc,
)
from validation.bootstrap import cluster_bootstrap


def _sample(seed: int, size: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(size) < 0.3).astype(int)
    scores = rng.normal(size=size) + 1.2 * labels
    if ties:
        scores = np.round(scores, 1)  # many tied scores, across and within classes
    return scores, labels


@pytest.mark.parametrize(("seed", "ties"), [(0, False), (1, True), (2, True)])
def test_rank_components_equal_the_kernel_and_the_auroc_equals_scikit_learn(
    seed: int, ties: bool
) -> None:
    scores, labels = _sample(seed, 300, ties)
    v10, v01 = delong_components(scores, labels)
    k10, k01 = delong_kernel_components(scores, labels)
    np.testing.assert_allclose(v10, k10, rtol=0, atol=1e-12)
    np.testing.assert_allclose(v01, k01, rtol=0, atol=1e-12)
    estimate = delong_auroc(scores, labels)
    assert estimate.value == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert (estimate.positives, estimate.negatives) == (int(labels.sum()), int((1 - labels).sum()))


def test_the_variance_is_delong_s_formula_on_a_hand_computed_example() -> None:
    # Positives 0.9, 0.4; negatives 0.5, 0.1, 0.4.
    scores = np.array([0.9, 0.4, 0.5, 0.1, 0.4])
    labels = np.array([1, 1, 0, 0, 0])
    # psi: row 0.9 -> (1, 1, 1); row 0.4 -> (0, 1, 0.5)
    v10 = np.array([1.0, 0.5])
    v01 = np.array([0.5, 1.0, 0.75])
    estimate = delong_auroc(scores, labels)
    assert estimate.value == pytest.approx(0.75)
    expected = np.var(v10, ddof=1) / 2 + np.var(v01, ddof=1) / 3
    assert estimate.variance == pytest.approx(expected, abs=1e-15)


def test_the_interval_agrees_with_a_bootstrap_on_a_large_sample() -> None:
    scores, labels = _sample(3, 2000)
    estimate = delong_auroc(scores, labels)
    rng = np.random.default_rng(4)
    positives, negatives = scores[labels == 1], scores[labels == 0]
    values = []
    for _ in range(1000):  # stratified bootstrap, as the DeLong interval is conditional on m, n
        p = rng.choice(positives, positives.size)
        q = rng.choice(negatives, negatives.size)
        values.append(roc_auc_score(np.r_[np.ones(p.size), np.zeros(q.size)], np.r_[p, q]))
    low, high = np.percentile(values, [2.5, 97.5])
    assert estimate.ci_low == pytest.approx(low, abs=0.006)
    assert estimate.ci_high == pytest.approx(high, abs=0.006)
    assert np.std(values, ddof=1) == pytest.approx(np.sqrt(estimate.variance), rel=0.1)


def test_bad_input_is_refused_with_a_clear_message() -> None:
    with pytest.raises(ValueError, match="needs cases with and without the finding: got 0 with"):
        delong_auroc([0.1, 0.2], [0, 0])
    with pytest.raises(ValueError, match="labels must be 0 or 1"):
        delong_auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        delong_auroc([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match="scores must be finite"):
        delong_auroc([0.1, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="confidence must be strictly between 0 and 1"):
        delong_auroc([0.1, 0.2], [0, 1], confidence=1.0)


def test_obuchowski_with_one_case_per_patient_is_delong_up_to_its_divisors() -> None:
    rng = np.random.default_rng(11)
    labels = rng.integers(0, 2, 120)
    scores = rng.normal(labels * 0.8, 1.0)
    clustered = obuchowski_auroc(scores, labels, np.arange(120))
    plain = delong_auroc(scores, labels)
    v10, v01 = delong_components(scores, labels)
    m, n, count = v10.size, v01.size, 120
    # Obuchowski divides by I - 1 clusters where DeLong divides by m - 1 and n - 1.
    expected = (
        count
        / (count - 1)
        * ((m - 1) / m * np.var(v10, ddof=1) / m + (n - 1) / n * np.var(v01, ddof=1) / n)
    )
    assert clustered.value == plain.value
    assert clustered.variance == pytest.approx(expected, rel=1e-12)


def test_obuchowski_follows_its_formula_from_the_kernel() -> None:
    scores = np.array([0.9, 0.4, 0.7, 0.2, 0.6, 0.6, 0.1, 0.8])
    labels = np.array([1, 0, 1, 0, 1, 0, 0, 1])
    patients = np.array(["a", "a", "b", "b", "b", "c", "d", "d"])
    kernel = (scores[labels == 1][:, None] > scores[labels == 0][None, :]) + 0.5 * (
        scores[labels == 1][:, None] == scores[labels == 0][None, :]
    )
    m, n = kernel.shape
    auroc = kernel.mean()
    v10, v01 = kernel.mean(axis=1), kernel.mean(axis=0)
    names = ["a", "b", "c", "d"]
    ten = [sum(v10[patients[labels == 1] == p] - auroc) for p in names]
    one = [sum(v01[patients[labels == 0] == p] - auroc) for p in names]
    factor = 4 / 3
    variance = (
        factor / m * np.dot(ten, ten) / m
        + factor / n * np.dot(one, one) / n
        + 2 * factor * np.dot(ten, one) / (m * n)
    )
    got = obuchowski_auroc(scores, labels, patients)
    assert got.value == pytest.approx(auroc)
    assert got.variance == pytest.approx(variance, rel=1e-12)


def test_obuchowski_matches_a_cluster_bootstrap_where_delong_is_too_narrow() -> None:
    rng = np.random.default_rng(5)
    patients = np.repeat(np.arange(150), 4)
    # Each patient's four studies share the label and most of the score: strong clustering.
    patient_label = rng.integers(0, 2, 150)
    labels = patient_label[patients]
    scores = rng.normal(patient_label * 1.0, 1.0)[patients] + rng.normal(0, 0.3, 600)
    clustered = obuchowski_auroc(scores, labels, patients)
    bootstrap = cluster_bootstrap(
        lambda s, y: float(roc_auc_score(y, s)), scores, labels, patients, resamples=1000
    )
    width = clustered.ci_high - clustered.ci_low
    assert width == pytest.approx(bootstrap.ci_high - bootstrap.ci_low, rel=0.15)
    naive = delong_auroc(scores, labels)
    assert naive.ci_high - naive.ci_low < 0.6 * width


def test_obuchowski_refuses_one_cluster_and_mismatched_identifiers() -> None:
    with pytest.raises(ValueError, match="at least two clusters"):
        obuchowski_auroc([0.1, 0.9], [0, 1], ["p", "p"])
    with pytest.raises(ValueError, match="2 labels but 3 cluster identifiers"):
        obuchowski_auroc([0.1, 0.9], [0, 1], ["p", "q", "r"])
