"""How well probabilities match observed frequencies: reliability curve, ECE, Brier score.

All functions take the probability of the positive class (a finding present)
and binary labels; multi-finding models are assessed one finding at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from sklearn.metrics import brier_score_loss


def binary_scores_and_labels(
    scores: ArrayLike, labels: ArrayLike, *, probabilities: bool
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Return ``scores`` and ``labels`` as checked 1-D arrays of equal length.

    Parameters
    ----------
    scores
        Probabilities (``probabilities=True``) or logits, one per case.
    labels
        0 or 1 per case.
    probabilities
        Whether ``scores`` must lie in [0, 1].

    Returns
    -------
    tuple of numpy.ndarray
        Scores as float64 and labels as int64.

    Raises
    ------
    ValueError
        If either is not 1-D, they differ in length, they are empty, a score is
        not finite (or, for probabilities, outside [0, 1]), or a label is not 0
        or 1.
    """
    values = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(labels)
    kind = "probabilities" if probabilities else "logits"
    if values.ndim != 1 or targets.ndim != 1 or values.shape != targets.shape:
        raise ValueError(
            f"{kind} and labels must be 1-D and equally long, got shapes "
            f"{values.shape} and {targets.shape}"
        )
    if values.size == 0:
        raise ValueError(f"{kind} and labels are empty")
    if not np.isfinite(values).all():
        raise ValueError(f"{kind} must be finite (found NaN or infinity)")
    if probabilities and ((values < 0.0) | (values > 1.0)).any():
        raise ValueError("probabilities must lie in [0, 1]")
    if not np.isin(targets, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return values, targets.astype(np.int64)


@dataclass(frozen=True)
class ReliabilityBin:
    """One non-empty bin of a reliability curve.

    Attributes
    ----------
    lower, upper
        Bin edges: the bin holds probabilities in ``[lower, upper)``, and the last
        bin also holds 1.0.
    mean_predicted
        Mean predicted probability of the cases in the bin.
    observed_frequency
        Share of positive cases in the bin.
    count
        Number of cases in the bin.
    """

    lower: float
    upper: float
    mean_predicted: float
    observed_frequency: float
    count: int


@dataclass(frozen=True)
class ReliabilityCurve:
    """A reliability curve: the non-empty bins in increasing order of probability.

    Attributes
    ----------
    bins
        Number of equal-width bins over [0, 1] (empty ones are not listed).
    points
        The non-empty bins.
    """

    bins: int
    points: tuple[ReliabilityBin, ...]

    @property
    def total(self) -> int:
        """Return the number of cases over all bins."""
        return sum(point.count for point in self.points)


def reliability_curve(
    probabilities: ArrayLike, labels: ArrayLike, bins: int = 10
) -> ReliabilityCurve:
    """Return the reliability curve of binary probabilities over equal-width bins.

    Bin ``k`` of ``bins`` holds the probabilities ``p`` with
    ``floor(p * bins) == k``, i.e. ``[k / bins, (k + 1) / bins)``; ``p = 1.0``
    goes to the last bin. (DeGroot and Fienberg 1983; Guo et al. 2017.)

    Parameters
    ----------
    probabilities
        Predicted probability of the positive class, one per case.
    labels
        0 or 1 per case.
    bins
        Number of equal-width bins, at least 1.

    Returns
    -------
    ReliabilityCurve
        Per non-empty bin: edges, mean predicted probability, observed frequency
        of positives and count.

    Raises
    ------
    ValueError
        If ``bins`` is below 1, or the inputs fail
        :func:`binary_scores_and_labels`.
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    values, targets = binary_scores_and_labels(probabilities, labels, probabilities=True)
    index = np.minimum(np.floor(values * bins).astype(np.int64), bins - 1)
    counts = np.bincount(index, minlength=bins)
    predicted = np.bincount(index, weights=values, minlength=bins)
    positives = np.bincount(index, weights=targets.astype(np.float64), minlength=bins)
    points = tuple(
        ReliabilityBin(
            lower=k / bins,
            upper=(k + 1) / bins,
            mean_predicted=float(predicted[k] / counts[k]),
            observed_frequency=float(positives[k] / counts[k]),
            count=int(counts[k]),
        )
        for k in np.flatnonzero(counts)
    )
    return ReliabilityCurve(bins=bins, points=points)


def expected_calibration_error(
    probabilities: ArrayLike, labels: ArrayLike, bins: int = 10
) -> float:
    """Return the expected calibration error (ECE) of binary probabilities.

    ``ECE = sum_k (n_k / n) * |mean predicted_k - observed frequency_k|`` over the
    equal-width bins of :func:`reliability_curve` (bin ``k`` is
    ``[k / bins, (k + 1) / bins)``, the last bin also holds 1.0; empty bins add
    nothing). Computed on the probability of the positive class, not on the
    top-label confidence of Guo et al.'s multi-class definition. (Naeini, Cooper
    and Hauskrecht 2015; Guo, Pleiss, Sun and Weinberger 2017, "On Calibration of
    Modern Neural Networks", ICML.)

    Parameters
    ----------
    probabilities, labels, bins
        As for :func:`reliability_curve`.

    Returns
    -------
    float
        In [0, 1]; 0 means every bin's mean prediction equals its observed rate.

    Raises
    ------
    ValueError
        As :func:`reliability_curve`.
    """
    curve = reliability_curve(probabilities, labels, bins)
    return sum(
        point.count / curve.total * abs(point.mean_predicted - point.observed_frequency)
        for point in curve.points
    )


def brier_score(probabilities: ArrayLike, labels: ArrayLike) -> float:
    """Return the Brier score, the mean squared error of binary probabilities.

    Delegates to :func:`sklearn.metrics.brier_score_loss` (Brier 1950).

    Parameters
    ----------
    probabilities, labels
        As for :func:`reliability_curve`.

    Returns
    -------
    float
        In [0, 1]; lower is better.

    Raises
    ------
    ValueError
        If the inputs fail :func:`binary_scores_and_labels`.
    """
    values, targets = binary_scores_and_labels(probabilities, labels, probabilities=True)
    return float(brier_score_loss(targets, values, pos_label=1))
