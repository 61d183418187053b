"""Sensitivity, specificity, PPV and NPV of a thresholded finding, each with its interval.

From the 2 x 2 table of flagged against the reference standard (TP, FP, TN, FN):

- sensitivity ``TP / (TP + FN)``, specificity ``TN / (TN + FP)``, PPV ``TP / (TP + FP)``,
  NPV ``TN / (TN + FN)``, each a binomial proportion with a Wilson score interval or,
  when a protocol asks, the Clopper-Pearson interval (:mod:`medvision.statistics`);
- when the set is enriched (its prevalence is not the intended-use prevalence
  ``pi``), PPV and NPV at ``pi`` by Bayes' rule from sensitivity and specificity:
  ``PPV = sens pi / (sens pi + (1 - spec)(1 - pi))`` and
  ``NPV = spec (1 - pi) / (spec (1 - pi) + (1 - sens) pi)``. Both rise with
  sensitivity and with specificity, so their interval is taken at the corners of
  the sensitivity and specificity intervals (lower with lower, upper with upper): a
  conservative interval, since both bounds hold together with less than the
  nominal confidence only if both marginal intervals fail.

A proportion with no trials (e.g. specificity with no negative case) has value NaN
and the interval ``(0, 1)``: nothing was observed, so nothing is excluded.

:func:`proportion_difference` compares two independent proportions (a subgroup's
sensitivity against the rest's) with Newcombe's hybrid score interval (Newcombe
1998, method 10), built from the two Wilson intervals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import ArrayLike

from medvision.choices import parse_choice
from medvision.statistics import clopper_pearson_interval, wilson_interval


class IntervalMethod(StrEnum):
    """How a proportion's confidence interval is computed."""

    WILSON = "wilson"
    CLOPPER_PEARSON = "clopper_pearson"


@dataclass(frozen=True)
class Estimate:
    """A figure with its confidence interval (the report's ``{value, ci_low, ci_high}``)."""

    value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class ConfusionCounts:
    """The 2 x 2 table of a thresholded finding against the reference standard."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        """Cases in the table."""
        return self.tp + self.fp + self.tn + self.fn

    @property
    def prevalence(self) -> float:
        """Share of cases with the finding (NaN without cases)."""
        return (self.tp + self.fn) / self.n if self.n else math.nan


def confusion_counts(flagged: ArrayLike, labels: ArrayLike) -> ConfusionCounts:
    """Count the 2 x 2 table of ``flagged`` (0/1 decisions) against ``labels`` (0/1).

    Raises
    ------
    ValueError
        If the lengths differ or a value is not 0 or 1.
    """
    decision = np.asarray(flagged).ravel()
    truth = np.asarray(labels).ravel()
    if decision.shape != truth.shape:
        raise ValueError(f"{decision.size} decisions but {truth.size} labels")
    for name, values in (("decisions", decision), ("labels", truth)):
        if not np.all(np.isin(values, (0, 1))):
            raise ValueError(f"{name} must be 0 or 1")
    return ConfusionCounts(
        tp=int(np.sum((decision == 1) & (truth == 1))),
        fp=int(np.sum((decision == 1) & (truth == 0))),
        tn=int(np.sum((decision == 0) & (truth == 0))),
        fn=int(np.sum((decision == 0) & (truth == 1))),
    )


def proportion(
    successes: int,
    trials: int,
    method: IntervalMethod | str = IntervalMethod.WILSON,
    confidence: float = 0.95,
) -> Estimate:
    """Return ``successes / trials`` with its interval (NaN and ``(0, 1)`` without trials)."""
    chosen = parse_choice(IntervalMethod, method, "interval method")
    interval = (
        wilson_interval(successes, trials, confidence)
        if chosen == IntervalMethod.WILSON
        else clopper_pearson_interval(successes, trials, confidence)
    )
    value = successes / trials if trials else math.nan
    return Estimate(value, *interval)


def _ppv(sensitivity: float, specificity: float, prevalence: float) -> float:
    true_positive = sensitivity * prevalence
    denominator = true_positive + (1.0 - specificity) * (1.0 - prevalence)
    return true_positive / denominator if denominator > 0 else math.nan


def _npv(sensitivity: float, specificity: float, prevalence: float) -> float:
    true_negative = specificity * (1.0 - prevalence)
    denominator = true_negative + (1.0 - sensitivity) * prevalence
    return true_negative / denominator if denominator > 0 else math.nan


def binary_metrics(
    counts: ConfusionCounts,
    method: IntervalMethod | str = IntervalMethod.WILSON,
    confidence: float = 0.95,
    intended_prevalence: float | None = None,
) -> dict[str, Estimate]:
    """Return sensitivity, specificity, PPV and NPV with intervals (see the module docstring).

    With ``intended_prevalence``, also ``ppv_at_intended_prevalence`` and
    ``npv_at_intended_prevalence``.

    Raises
    ------
    ValueError
        For an unknown method, or an intended prevalence outside (0, 1).
    """
    metrics = {
        "sensitivity": proportion(counts.tp, counts.tp + counts.fn, method, confidence),
        "specificity": proportion(counts.tn, counts.tn + counts.fp, method, confidence),
        "ppv": proportion(counts.tp, counts.tp + counts.fp, method, confidence),
        "npv": proportion(counts.tn, counts.tn + counts.fn, method, confidence),
    }
    if intended_prevalence is not None:
        metrics |= at_intended_prevalence(
            metrics["sensitivity"], metrics["specificity"], intended_prevalence
        )
    return metrics


def at_intended_prevalence(
    sensitivity: Estimate, specificity: Estimate, prevalence: float
) -> dict[str, Estimate]:
    """Return ``ppv_at_intended_prevalence`` and ``npv_at_intended_prevalence``.

    By Bayes' rule, with the interval at the corners of the sensitivity and
    specificity intervals (see the module docstring).

    Raises
    ------
    ValueError
        If the prevalence is outside (0, 1).
    """
    if not 0.0 < prevalence < 1.0:
        raise ValueError(f"the intended-use prevalence must be in (0, 1), got {prevalence}")
    return {
        f"{name}_at_intended_prevalence": Estimate(
            rule(sensitivity.value, specificity.value, prevalence),
            rule(sensitivity.ci_low, specificity.ci_low, prevalence),
            rule(sensitivity.ci_high, specificity.ci_high, prevalence),
        )
        for name, rule in (("ppv", _ppv), ("npv", _npv))
    }


def proportion_difference(
    successes: int,
    trials: int,
    other_successes: int,
    other_trials: int,
    confidence: float = 0.95,
) -> Estimate:
    """Return ``p1 - p2`` of two independent proportions with Newcombe's hybrid score interval.

    ``p1 = successes / trials`` (e.g. a subgroup), ``p2 = other_successes /
    other_trials`` (e.g. the rest). NaN with the interval ``(-1, 1)`` when either has
    no trials.
    """
    if trials == 0 or other_trials == 0:
        return Estimate(math.nan, -1.0, 1.0)
    p1, p2 = successes / trials, other_successes / other_trials
    low1, high1 = wilson_interval(successes, trials, confidence)
    low2, high2 = wilson_interval(other_successes, other_trials, confidence)
    difference = p1 - p2
    below = math.sqrt((p1 - low1) ** 2 + (high2 - p2) ** 2)
    above = math.sqrt((high1 - p1) ** 2 + (p2 - low2) ** 2)
    return Estimate(difference, difference - below, difference + above)
