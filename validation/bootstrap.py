"""Percentile bootstrap intervals that respect clustering (several studies per patient).

Cases from one patient are not independent: resampling cases one by one then
understates the variance. :func:`cluster_bootstrap` resamples whole clusters
(patients) with replacement, recomputes the statistic on the cases of the drawn
clusters (a cluster drawn twice counts twice), and returns the percentile
interval (Davison and Hinkley 1997, section 3.8). With one case per cluster it is
the ordinary bootstrap. Resamples on which the statistic is undefined (NaN, e.g.
no positive case drawn) are dropped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

Statistic = Callable[[NDArray[np.float64], NDArray[np.int64]], float]


@dataclass(frozen=True)
class BootstrapInterval:
    """A statistic with its percentile bootstrap interval."""

    value: float
    ci_low: float
    ci_high: float
    resamples: int
    undefined: int
    clusters: int


def cluster_bootstrap(
    statistic: Statistic,
    scores: ArrayLike,
    labels: ArrayLike,
    clusters: ArrayLike,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """Return ``statistic(scores, labels)`` with a cluster-bootstrap percentile interval.

    Parameters
    ----------
    statistic
        ``f(scores, labels) -> float`` (e.g. an AUROC or a sensitivity); NaN where
        undefined.
    scores, labels
        One per case.
    clusters
        One identifier per case (e.g. the patient ID); cases sharing it are drawn together.
    resamples, confidence, seed
        Number of resamples, interval level and random seed (the same seed gives the
        same interval).

    Raises
    ------
    ValueError
        If the lengths differ, there is no case, ``resamples`` is below 1, the
        confidence is outside (0, 1), or the statistic is undefined on every resample.
    """
    values = np.asarray(scores, dtype=np.float64).ravel()
    truth = np.asarray(labels).ravel().astype(np.int64)
    groups = np.asarray(clusters).ravel()
    if not values.size == truth.size == groups.size:
        raise ValueError(
            f"{values.size} scores, {truth.size} labels and {groups.size} cluster identifiers"
        )
    if values.size == 0:
        raise ValueError("a bootstrap needs at least one case")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence}")
    _, cluster_of_case = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(cluster_of_case == k) for k in range(cluster_of_case.max() + 1)]
    rng = np.random.default_rng(seed)
    estimates = []
    for _ in range(resamples):
        drawn = rng.integers(0, len(members), len(members))
        cases = np.concatenate([members[k] for k in drawn])
        estimates.append(statistic(values[cases], truth[cases]))
    finite = np.asarray([e for e in estimates if not math.isnan(e)], dtype=np.float64)
    if finite.size == 0:
        raise ValueError("the statistic is undefined on every bootstrap resample")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return BootstrapInterval(
        value=float(statistic(values, truth)),
        ci_low=float(low),
        ci_high=float(high),
        resamples=resamples,
        undefined=resamples - int(finite.size),
        clusters=len(members),
    )


def cluster_proportion_interval(
    successes: ArrayLike,
    clusters: ArrayLike,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 100,
) -> tuple[float, float]:
    """Return a cluster-bootstrap percentile interval of a proportion, fast.

    ``successes`` holds one 0/1 outcome per trial (e.g. detected, for each case with
    the finding) and ``clusters`` its cluster (patient). Each resample draws the
    clusters with replacement (multinomial counts, in chunks of ``chunk``
    resamples), and the proportion is the drawn clusters' successes over their
    trials. With one trial per cluster it is the ordinary bootstrap of a proportion.

    Raises
    ------
    ValueError
        If the lengths differ or there is no trial.
    """
    outcome = np.asarray(successes, dtype=np.float64).ravel()
    groups = np.asarray(clusters).ravel()
    if outcome.size != groups.size:
        raise ValueError(f"{outcome.size} outcomes but {groups.size} cluster identifiers")
    if outcome.size == 0:
        raise ValueError("a proportion's interval needs at least one trial")
    _, index = np.unique(groups, return_inverse=True)
    per_cluster_successes = np.bincount(index, weights=outcome)
    per_cluster_trials = np.bincount(index).astype(np.float64)
    count = per_cluster_trials.size
    rng = np.random.default_rng(seed)
    ratios = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        weights = rng.multinomial(count, np.full(count, 1.0 / count), size=size)
        ratios.append((weights @ per_cluster_successes) / (weights @ per_cluster_trials))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(np.concatenate(ratios), [alpha, 1.0 - alpha])
    return float(low), float(high)
