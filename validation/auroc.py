"""AUROC with DeLong's variance and confidence interval (no maintained library has it).

For ``m`` cases with the finding (scores ``X``) and ``n`` without (scores ``Y``), the
AUROC is the Mann-Whitney statistic ``(1 / mn) sum_ij psi(X_i, Y_j)`` with
``psi(x, y) = 1`` if ``x > y``, ``1/2`` if ``x = y``, ``0`` otherwise. DeLong, DeLong
and Clarke-Pearson (1988) estimate its variance from the structural components

    V10_i = (1 / n) sum_j psi(X_i, Y_j),    V01_j = (1 / m) sum_i psi(X_i, Y_j),

as ``S10 / m + S01 / n`` with ``S10`` and ``S01`` their sample variances. The
components are computed from mid-ranks in ``O((m + n) log(m + n))`` (Sun and Xu
2014) rather than from the ``m x n`` kernel. The interval is the normal one,
``AUROC +/- z sqrt(var)``, clipped to ``[0, 1]``.

:func:`delong_kernel_components` computes the same components from the kernel
directly; the tests cross-check both against each other, against scikit-learn's
AUROC and against a bootstrap interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import norm, rankdata


@dataclass(frozen=True)
class AurocEstimate:
    """An AUROC and its DeLong confidence interval.

    Attributes
    ----------
    value
        The AUROC (Mann-Whitney, ties counted one half).
    variance
        DeLong's variance estimate.
    ci_low, ci_high
        The normal interval at ``confidence``, clipped to ``[0, 1]``.
    confidence
        The interval's confidence level.
    positives, negatives
        Cases with and without the finding.
    """

    value: float
    variance: float
    ci_low: float
    ci_high: float
    confidence: float
    positives: int
    negatives: int


def _split(scores: ArrayLike, labels: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    values = np.asarray(scores, dtype=np.float64).ravel()
    truth = np.asarray(labels).ravel()
    if values.shape != truth.shape:
        raise ValueError(f"{values.size} scores but {truth.size} labels")
    if not np.all(np.isin(truth, (0, 1))):
        raise ValueError("labels must be 0 or 1")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite numbers")
    positives, negatives = values[truth == 1], values[truth == 0]
    if positives.size == 0 or negatives.size == 0:
        raise ValueError(
            f"an AUROC needs cases with and without the finding: got {positives.size} with "
            f"and {negatives.size} without"
        )
    return positives, negatives


def delong_components(
    scores: ArrayLike, labels: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return DeLong's structural components ``(V10, V01)`` from mid-ranks (Sun and Xu 2014).

    Raises
    ------
    ValueError
        If the shapes differ, a label is not 0 or 1, a score is not finite, or one
        class is absent.
    """
    positives, negatives = _split(scores, labels)
    m, n = positives.size, negatives.size
    combined = rankdata(np.concatenate([positives, negatives]))  # mid-ranks
    within_positives = rankdata(positives)
    within_negatives = rankdata(negatives)
    v10 = (combined[:m] - within_positives) / n
    v01 = 1.0 - (combined[m:] - within_negatives) / m
    return v10, v01


def delong_kernel_components(
    scores: ArrayLike, labels: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return ``(V10, V01)`` from the ``m x n`` kernel (slow; the definition, for checks)."""
    positives, negatives = _split(scores, labels)
    kernel = (positives[:, None] > negatives[None, :]) + 0.5 * (
        positives[:, None] == negatives[None, :]
    )
    return kernel.mean(axis=1), kernel.mean(axis=0)


def _normal_interval(
    value: float, variance: float, confidence: float, positives: int, negatives: int
) -> AurocEstimate:
    """Return the AUROC with its normal interval ``value +/- z sqrt(variance)`` in [0, 1]."""
    half = float(norm.ppf(0.5 + confidence / 2.0)) * math.sqrt(variance)
    return AurocEstimate(
        value=value,
        variance=variance,
        ci_low=max(0.0, value - half),
        ci_high=min(1.0, value + half),
        confidence=confidence,
        positives=positives,
        negatives=negatives,
    )


def delong_auroc(scores: ArrayLike, labels: ArrayLike, confidence: float = 0.95) -> AurocEstimate:
    """Return the AUROC of ``scores`` for binary ``labels`` with DeLong's interval.

    Parameters
    ----------
    scores
        Higher means the finding is more likely (probabilities or logits).
    labels
        1 with the finding, 0 without.
    confidence
        Level of the interval, in (0, 1).

    Raises
    ------
    ValueError
        As :func:`delong_components`, or for ``confidence`` outside (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    v10, v01 = delong_components(scores, labels)
    m, n = v10.size, v01.size
    value = float(v10.mean())
    s10 = float(np.var(v10, ddof=1)) if m > 1 else 0.0
    s01 = float(np.var(v01, ddof=1)) if n > 1 else 0.0
    variance = s10 / m + s01 / n
    return _normal_interval(value, variance, confidence, m, n)


def obuchowski_auroc(
    scores: ArrayLike, labels: ArrayLike, clusters: ArrayLike, confidence: float = 0.95
) -> AurocEstimate:
    """Return the AUROC with Obuchowski's (1997) interval for clustered cases.

    When a patient contributes several cases, the cases are not independent and
    DeLong's variance is too small. Obuchowski's nonparametric estimator sums
    DeLong's structural components per cluster: with ``I`` clusters, ``m_i``
    positives and ``n_i`` negatives in cluster ``i``, ``V10_i`` the sum of its
    positives' ``V10`` and ``V01_i`` the sum of its negatives' ``V01``,

        S10 = I / ((I - 1) M) sum_i (V10_i - m_i A)^2
        S01 = I / ((I - 1) N) sum_i (V01_i - n_i A)^2
        S11 = I / (I - 1) sum_i (V10_i - m_i A)(V01_i - n_i A)
        var = S10 / M + S01 / N + 2 S11 / (M N)

    (``M``, ``N`` all positives and negatives, ``A`` the AUROC). The interval is
    the normal one, clipped to ``[0, 1]``. The AUROC itself is the ordinary one.

    Raises
    ------
    ValueError
        As :func:`delong_auroc`, if the cluster identifiers do not match the
        cases, or there is only one cluster.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    truth = np.asarray(labels).ravel()
    groups = np.asarray(clusters).ravel()
    if groups.size != truth.size:
        raise ValueError(f"{truth.size} labels but {groups.size} cluster identifiers")
    v10, v01 = delong_components(scores, labels)
    m, n = v10.size, v01.size
    value = float(v10.mean())
    _, index = np.unique(groups, return_inverse=True)
    count = int(index.max()) + 1
    if count < 2:
        raise ValueError("a clustered AUROC interval needs at least two clusters")
    positive, negative = index[truth == 1], index[truth == 0]
    # Sums per cluster, with the placements centred at the AUROC (m_i A and n_i A).
    ten = np.bincount(positive, weights=v10 - value, minlength=count)
    one = np.bincount(negative, weights=v01 - value, minlength=count)
    factor = count / (count - 1)
    s10 = factor / m * float(ten @ ten)
    s01 = factor / n * float(one @ one)
    s11 = factor * float(ten @ one)
    variance = max(0.0, s10 / m + s01 / n + 2.0 * s11 / (m * n))
    return _normal_interval(value, variance, confidence, m, n)
