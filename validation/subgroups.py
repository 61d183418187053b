"""Every figure of a protocol, overall and for every subgroup, with acceptance per criterion.

Input: one :class:`Case` per study (reference label, calibrated probability, the
decision at the protocol's threshold, and the study's attributes). For the whole
set and for each value of each subgroup column of the protocol (and each
combination of an intersection, e.g. site x device):

- n, positives, prevalence and the 2 x 2 table;
- sensitivity, specificity, PPV, NPV with the protocol's interval method
  (:func:`validation.binary.binary_metrics`), PPV and NPV at the intended-use
  prevalence when the protocol states one. When the protocol names a cluster
  column (``cluster: patient_id``) and some patient contributes several cases, the
  sensitivity, specificity, PPV and NPV intervals are cluster-bootstrap percentile
  intervals that resample patients (:func:`validation.bootstrap.cluster_bootstrap_ratios`,
  1,000 resamples shared by every group, seed 0), since cases of one patient are
  not independent, and PPV and NPV at the
  intended-use prevalence are taken from those sensitivity and specificity
  intervals; a case without a patient identifier is its own cluster;
- AUROC with DeLong's interval (:func:`validation.auroc.delong_auroc`), where the
  group has both classes; with clustered cases (as above), Obuchowski's interval
  for clustered data (:func:`validation.auroc.obuchowski_auroc`);
- for a subgroup, its sensitivity and specificity minus those of the rest of the
  set, with Newcombe's interval (:func:`validation.binary.proportion_difference`),
  or with clustered cases the percentile interval of the difference on the same
  patient resamples;
- each acceptance criterion ``<figure>_lower_ci_min: bound`` passes when the
  figure's lower interval bound is at least the bound. A subgroup with fewer cases
  than ``minimum_subgroup_size`` is **underpowered**, and a criterion whose figure
  rests on fewer cases than that (sensitivity on the cases with the finding,
  specificity on those without, PPV on the flagged, NPV on the unflagged) is "not
  judged": never passed — an interval from a handful of cases cannot show
  equivalence — and never failed for want of cases alone.

Age is grouped into the protocol's ``age_bands`` (``[18, 40, 65]`` gives
``<18``, ``18-39``, ``40-64``, ``65+``); a missing attribute is its own group,
``unknown``, so that no case is silently dropped.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from validation.auroc import delong_auroc, obuchowski_auroc
from validation.binary import (
    ConfusionCounts,
    Estimate,
    at_intended_prevalence,
    binary_metrics,
    confusion_counts,
    proportion_difference,
)
from validation.bootstrap import (
    Ratio,
    cluster_bootstrap_ratios,
    percentile_interval,
    proportion_ratio,
)
from validation.protocol import Protocol, criterion_figure
from validation.segmentation import (
    ScanFigures,
    SegmentationFigures,
    nodule_type_members,
    segmentation_figures,
)

#: The value of a missing attribute.
UNKNOWN = "unknown"
#: The column name of the whole set.
OVERALL = "overall"


class Verdict(StrEnum):
    """The outcome of one acceptance criterion for one group."""

    PASS = "pass"
    FAIL = "fail"
    NOT_JUDGED = "not judged"


@dataclass(frozen=True)
class Case:
    """One study of the validation set, as the suite needs it."""

    study_instance_uid: str
    label: int
    probability: float
    flagged: int
    attributes: Mapping[str, str | int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupFigures:
    """The figures of one group (the whole set, a subgroup, or an intersection)."""

    column: str
    value: str
    counts: ConfusionCounts
    metrics: dict[str, Estimate]
    differences: dict[str, Estimate]
    underpowered: bool
    acceptance: dict[str, Verdict]
    segmentation_counts: dict[str, int] | None = None

    @property
    def n(self) -> int:
        """Cases in the group."""
        return self.counts.n

    @property
    def failed(self) -> list[str]:
        """The criteria this group fails."""
        return [name for name, verdict in self.acceptance.items() if verdict == Verdict.FAIL]


def age_band(age: int | None, bands: Sequence[int]) -> str:
    """Return the band of ``age`` among ``bands`` (whole years), or :data:`UNKNOWN`."""
    if age is None:
        return UNKNOWN
    if age < bands[0]:
        return f"<{bands[0]}"
    for low, high in itertools.pairwise(bands):
        if low <= age < high:
            return f"{low}-{high - 1}"
    return f"{bands[-1]}+"


def group_value(case: Case, column: str, protocol: Protocol) -> str:
    """Return the case's value of a subgroup column (``age_band`` derived from ``age``)."""
    if column == "age_band":
        age = case.attributes.get("age")
        return age_band(int(age) if age not in (None, "") else None, protocol.age_bands)
    value = case.attributes.get(column)
    return UNKNOWN if value in (None, "") else str(value)


@dataclass(frozen=True)
class _Columns:
    labels: NDArray[np.int64]
    flagged: NDArray[np.int64]
    probabilities: NDArray[np.float64]
    clusters: NDArray[np.str_] | None  # set when intervals must resample patients
    scans: ScanFigures | None = None  # a CT segmenter's per-scan outcomes
    scan_of_case: NDArray[np.int64] | None = None  # -1: the case has no scan


def cluster_identifiers(cases: Sequence[Case], protocol: Protocol) -> NDArray[np.str_] | None:
    """Return each case's cluster when intervals must resample clusters, else ``None``.

    That is when the protocol names a cluster column and some cluster (patient)
    contributes more than one case; a case without an identifier is its own cluster.
    """
    if protocol.cluster is None:
        return None
    column = protocol.cluster
    identifiers = np.array(
        [str(case.attributes.get(column) or f"case {case.study_instance_uid}") for case in cases]
    )
    return identifiers if np.unique(identifiers).size < identifiers.size else None


#: The proportions whose intervals resample clusters: figure, its trials, its successes.
_PROPORTIONS: tuple[
    tuple[
        str,
        Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.bool_]],
        Callable[[NDArray[np.int64], NDArray[np.int64]], NDArray[np.bool_]],
    ],
    ...,
] = (
    ("sensitivity", lambda labels, flagged: labels == 1, lambda labels, flagged: flagged == 1),
    ("specificity", lambda labels, flagged: labels == 0, lambda labels, flagged: flagged == 0),
    ("ppv", lambda labels, flagged: flagged == 1, lambda labels, flagged: labels == 1),
    ("npv", lambda labels, flagged: flagged == 0, lambda labels, flagged: labels == 0),
)


Intervals = dict[str, tuple[float, float]]


def _clustered_intervals(
    groups: Sequence[tuple[str, str, NDArray[np.bool_]]], data: _Columns, protocol: Protocol
) -> list[Intervals]:
    """Return, per group, the cluster-bootstrap intervals of its proportions and differences.

    All groups' figures come from the same 1,000 resamples of the patients
    (:func:`validation.bootstrap.cluster_bootstrap_ratios`, seed 0): fast for many
    groups, and each subgroup's difference from the rest is taken within a resample.
    Keys: the proportion's name, and ``difference_<name>`` for a subgroup's
    sensitivity and specificity minus the rest's.
    """
    assert data.clusters is not None  # only called for clustered cases
    labels, flagged = data.labels, data.flagged
    ratios: list[Ratio] = []
    keys: list[tuple[int, str]] = []
    for index, (column, _, members) in enumerate(groups):
        for name, cases_of, outcome in _PROPORTIONS:
            trials = cases_of(labels, flagged)
            ratios.append(proportion_ratio(outcome(labels, flagged), members & trials))
            keys.append((index, name))
            if column != OVERALL and name in ("sensitivity", "specificity"):
                ratios.append(proportion_ratio(outcome(labels, flagged), ~members & trials))
                keys.append((index, f"rest_{name}"))
    draws = cluster_bootstrap_ratios(ratios, data.clusters)
    by_key = {key: draws[:, position] for position, key in enumerate(keys)}
    result: list[Intervals] = [{} for _ in groups]
    for (index, name), values in by_key.items():
        if name.startswith("rest_"):
            figure = name.removeprefix("rest_")
            values = by_key[(index, figure)] - values
            name = f"difference_{figure}"
        if not np.isnan(values).all():
            result[index][name] = percentile_interval(values, protocol.confidence)
    return result


def _figures(
    column: str,
    value: str,
    members: NDArray[np.bool_],
    data: _Columns,
    protocol: Protocol,
    clustered: Intervals | None = None,
) -> GroupFigures:
    labels, flagged, probabilities = data.labels, data.flagged, data.probabilities
    counts = confusion_counts(flagged[members], labels[members])
    metrics = binary_metrics(
        counts, protocol.interval_method, protocol.confidence, protocol.intended_use_prevalence
    )
    if clustered is not None:
        for name, _, _ in _PROPORTIONS:
            if name in clustered:
                metrics[name] = Estimate(metrics[name].value, *clustered[name])
        if protocol.intended_use_prevalence is not None:
            metrics |= at_intended_prevalence(
                metrics["sensitivity"], metrics["specificity"], protocol.intended_use_prevalence
            )
    group_labels = labels[members]
    if 0 < group_labels.sum() < group_labels.size:
        if data.clusters is not None and np.unique(data.clusters[members]).size > 1:
            auroc = obuchowski_auroc(
                probabilities[members], group_labels, data.clusters[members], protocol.confidence
            )
        else:
            auroc = delong_auroc(probabilities[members], group_labels, protocol.confidence)
        metrics["auroc"] = Estimate(auroc.value, auroc.ci_low, auroc.ci_high)
    else:
        metrics["auroc"] = Estimate(math.nan, 0.0, 1.0)
    differences: dict[str, Estimate] = {}
    if column != OVERALL:
        rest = confusion_counts(flagged[~members], labels[~members])
        differences["sensitivity"] = proportion_difference(
            counts.tp, counts.tp + counts.fn, rest.tp, rest.tp + rest.fn, protocol.confidence
        )
        differences["specificity"] = proportion_difference(
            counts.tn, counts.tn + counts.fp, rest.tn, rest.tn + rest.fp, protocol.confidence
        )
        for name in ("sensitivity", "specificity"):
            if clustered is not None and f"difference_{name}" in clustered:
                interval = clustered[f"difference_{name}"]
                differences[name] = Estimate(differences[name].value, *interval)
    underpowered = counts.n < protocol.minimum_subgroup_size
    denominators = {
        "sensitivity": counts.tp + counts.fn,
        "specificity": counts.tn + counts.fp,
        "ppv": counts.tp + counts.fp,
        "npv": counts.tn + counts.fn,
        "auroc": counts.n,
    }
    segmentation = _segmentation(members, data, protocol)
    if segmentation is not None:
        metrics |= segmentation.metrics
        denominators |= segmentation.denominators
    acceptance: dict[str, Verdict] = {}
    for criterion, bound in protocol.acceptance.items():
        name, upper = criterion_figure(criterion)
        figure = metrics.get(name)
        too_few = denominators.get(name, 0) < protocol.minimum_subgroup_size
        if figure is None or underpowered or too_few or math.isnan(figure.value):
            acceptance[criterion] = Verdict.NOT_JUDGED
        elif upper:
            acceptance[criterion] = Verdict.PASS if figure.ci_high <= bound else Verdict.FAIL
        else:
            acceptance[criterion] = Verdict.PASS if figure.ci_low >= bound else Verdict.FAIL
    return GroupFigures(
        column,
        value,
        counts,
        metrics,
        differences,
        underpowered,
        acceptance,
        None if segmentation is None else segmentation.counts,
    )


def _segmentation(
    members: NDArray[np.bool_],
    data: _Columns,
    protocol: Protocol,
    nodules: NDArray[np.bool_] | None = None,
) -> SegmentationFigures | None:
    if data.scans is None or data.scan_of_case is None:
        return None
    scan_members = np.zeros(len(data.scans.study_instance_uids), dtype=bool)
    scan_members[data.scan_of_case[members & (data.scan_of_case >= 0)]] = True
    clusters = None
    if data.clusters is not None:
        clusters = np.full(scan_members.size, "", dtype=object)
        has_scan = data.scan_of_case >= 0
        clusters[data.scan_of_case[has_scan]] = data.clusters[has_scan]
        clusters = clusters.astype(str)
    return segmentation_figures(
        data.scans,
        scan_members,
        clusters,
        max_false_positives_per_scan=protocol.max_false_positives_per_scan,
        confidence=protocol.confidence,
        nodules=nodules,
    )


def _scan_of_case(cases: Sequence[Case], scans: ScanFigures) -> NDArray[np.int64]:
    index = {uid: i for i, uid in enumerate(scans.study_instance_uids)}
    return np.array([index.get(c.study_instance_uid, -1) for c in cases], dtype=np.int64)


def _columns(cases: Sequence[Case], protocol: Protocol, scans: ScanFigures | None) -> _Columns:
    return _Columns(
        labels=np.array([c.label for c in cases], dtype=np.int64),
        flagged=np.array([c.flagged for c in cases], dtype=np.int64),
        probabilities=np.array([c.probability for c in cases], dtype=np.float64),
        clusters=cluster_identifiers(cases, protocol),
        scans=scans,
        scan_of_case=None if scans is None else _scan_of_case(cases, scans),
    )


def evaluate(
    cases: Sequence[Case], protocol: Protocol, scans: ScanFigures | None = None
) -> list[GroupFigures]:
    """Return the figures of the whole set, then of every subgroup and intersection.

    Subgroups come in the protocol's column order, values sorted; intersections
    after them, named like ``site x manufacturer_model`` with values joined by
    `` x ``. With ``scans`` (a CT segmenter's per-scan outcomes, matched to cases
    by StudyInstanceUID), each group also gets the segmentation and detection
    figures of its scans (:mod:`validation.segmentation`), judged like the others.

    Raises
    ------
    ValueError
        If there is no case.
    """
    if not cases:
        raise ValueError("the validation set has no case")
    data = _columns(cases, protocol, scans)
    clusters = data.clusters
    groups: list[tuple[str, str, NDArray[np.bool_]]] = [
        (OVERALL, "all", np.ones(len(cases), dtype=bool))
    ]
    columns = [(column,) for column in protocol.subgroups] + list(protocol.intersections)
    for group in columns:
        keys = [
            " x ".join(group_value(case, column, protocol) for column in group) for case in cases
        ]
        name = " x ".join(group)
        key_array = np.array(keys, dtype=object)
        groups += [(name, value, key_array == value) for value in sorted(set(keys))]
    clustered: list[Intervals | None] = [None] * len(groups)
    if clusters is not None:
        clustered = list(_clustered_intervals(groups, data, protocol))
    return [
        _figures(column, value, members, data, protocol, intervals)
        for (column, value, members), intervals in zip(groups, clustered, strict=True)
    ]


def detection_by_nodule_type(
    cases: Sequence[Case], protocol: Protocol, scans: ScanFigures
) -> dict[str, SegmentationFigures]:
    """Return the whole set's detection figures for the nodules of each attenuation type.

    Per type (solid, part-solid, ground-glass, ``unknown``; sorted), the detection
    and candidate sensitivities count only that type's nodules, read at the
    threshold that the whole set's false positives set
    (:func:`validation.segmentation.segmentation_figures` with ``nodules``), with
    intervals that resample scans or patients as the whole set's do. Empty when
    no candidates were given (the sensitivities need them).
    """
    if not scans.candidates or not cases:
        return {}
    data = _columns(cases, protocol, scans)
    everyone = np.ones(len(cases), dtype=bool)
    by_type: dict[str, SegmentationFigures] = {}
    for kind, nodules in nodule_type_members(scans).items():
        figures = _segmentation(everyone, data, protocol, nodules)
        if figures is not None:
            by_type[kind] = figures
    return by_type
