"""DeLong's AUROC interval, cross-checked against the kernel, scikit-learn and a bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from validation.auroc import delong_auroc, delong_components, delong_kernel_components


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
