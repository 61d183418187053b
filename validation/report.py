"""The validation report's data: ``report.json``, with every number of a run.

Layout (every figure as ``{"value", "ci_low", "ci_high"}``; NaN written as ``null``)::

    {
      "format_version": 1,
      "protocol": {... the protocol's fields, "sha256": ...},
      "data": {"predictions_sha256", "manifest_sha256", "cases", "not_analysed",
               "clustered_intervals", "splits": {split: cases}, "reference_standard"},
      "models": [{"name", "version", "weights_sha256", "rows"}],
      "overall": GROUP,
      "subgroups": {column: {value: GROUP}},
      "segmentation": null | {"scans", "masks", "candidates", "min_nodule_diameter_mm",
                              "max_false_positives_per_scan",
                              "froc": [{threshold, sensitivity, false_positives_per_scan}],
                              "by_nodule_type": {type: {"nodules", "detected",
                                                        "detection_sensitivity",
                                                        "candidate_sensitivity"}}},
      "acceptance": {"passed": bool, "failures": [{column, value, criterion, figure, limit,
                                                   ci_low, ci_high, bound, shortfall,
                                                   difference_from_rest}]},
      "operating_point_stability": {"target_sensitivity", "sites": {site: {n, threshold, ...}}},
      "input_problems": [{"kind", "count", "action", "where"}],
      "reproducibility": {"packages": {...}, "python": ..., "seed": 0},
      "warnings": [...]
    }

with GROUP = ``{n, positives, prevalence, tp, fp, tn, fn, not_analysed,
not_analysed_share, underpowered, metrics: {...}, differences: {...},
calibration: {ece, ece_bins, reliability: [{lower, upper, mean_predicted,
observed_frequency, count}], brier, slope, slope_intercept, intercept_in_the_large},
acceptance: {criterion: "pass" | "fail" | "not judged"}, segmentation}``. For a CT
protocol given masks or candidates, ``metrics`` also holds the segmentation and
detection figures (:mod:`validation.segmentation`) and ``segmentation`` their counts
(scans, scans_with_nodule, missed_scans, hd95_scans, nodules, detected,
false_positives); otherwise it is ``null``. ``by_nodule_type`` gives the whole
set's detection figures for the nodules of each attenuation type
(:func:`validation.subgroups.detection_by_nodule_type`); empty without candidates.

Failures are listed worst first: a failure of the whole set before any subgroup's,
then the subgroups most clearly worse than the rest of the set (lowest upper bound
of their difference from the rest, Newcombe's interval), then by how far the lower
bound falls short. A small subgroup with a wide interval thus does not crowd out a
large one that is reliably worse.
"""

from __future__ import annotations

import json
import math
import platform
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from medvision.calibration.metrics import (
    brier_score,
    expected_calibration_error,
    reliability_curve,
)
from medvision.calibration.operating_point import threshold_for_sensitivity
from medvision.evaluation.ct_detection import froc_points
from validation.binary import Estimate
from validation.calibration import calibration_line
from validation.ct_inputs import CtScan
from validation.inputs import DEVELOPMENT_SPLITS, ValidationInputs, manifest_attributes
from validation.protocol import Protocol, criterion_figure
from validation.segmentation import SegmentationFigures
from validation.subgroups import (
    OVERALL,
    Case,
    GroupFigures,
    Verdict,
    cluster_identifiers,
    group_value,
)

REPORT_FORMAT_VERSION = 1
#: Equal-width bins of the reported ECE.
ECE_BINS = 10
#: Packages whose versions the reproducibility block records.
PACKAGES = ("medvision", "numpy", "scipy", "scikit-learn", "torch", "monai", "pydicom")


def _number(value: float) -> float | None:
    return None if math.isnan(value) else value


def _estimate(estimate: Estimate) -> dict[str, float | None]:
    return {
        "value": _number(estimate.value),
        "ci_low": _number(estimate.ci_low),
        "ci_high": _number(estimate.ci_high),
    }


def _calibration(cases: list[Case]) -> dict[str, Any]:
    labels = np.array([c.label for c in cases])
    probabilities = np.array([c.probability for c in cases])
    result: dict[str, Any] = {
        "ece": _number(expected_calibration_error(probabilities, labels, ECE_BINS)),
        "ece_bins": ECE_BINS,
        "reliability": [
            asdict(point) for point in reliability_curve(probabilities, labels, ECE_BINS).points
        ],
        "brier": _number(brier_score(probabilities, labels)),
        "slope": None,
        "slope_intercept": None,
        "intercept_in_the_large": None,
    }
    if 0 < labels.sum() < labels.size:
        try:
            line = calibration_line(probabilities, labels)
        except ValueError:
            return result  # perfectly separated: no finite slope
        result |= {
            "slope": line.slope,
            "slope_intercept": line.slope_intercept,
            "intercept_in_the_large": line.intercept_in_the_large,
        }
    return result


def _group(figures: GroupFigures, members: list[Case], not_analysed: int) -> dict[str, Any]:
    counts = figures.counts
    total = counts.n + not_analysed
    return {
        "n": counts.n,
        "positives": counts.tp + counts.fn,
        "prevalence": _number(counts.prevalence),
        "tp": counts.tp,
        "fp": counts.fp,
        "tn": counts.tn,
        "fn": counts.fn,
        "not_analysed": not_analysed,
        "not_analysed_share": not_analysed / total if total else None,
        "underpowered": figures.underpowered,
        "metrics": {name: _estimate(e) for name, e in figures.metrics.items()},
        "differences": {name: _estimate(e) for name, e in figures.differences.items()},
        "calibration": _calibration(members) if members else None,
        "acceptance": {name: verdict.value for name, verdict in figures.acceptance.items()},
        "segmentation": figures.segmentation_counts,
    }


#: Sensitivity the per-site thresholds of the stability block are chosen to reach.
STABILITY_TARGET_SENSITIVITY = 0.90


def threshold_stability(cases: list[Case], confidence: float) -> dict[str, Any]:
    """Return, per site, the threshold that would reach the target sensitivity there.

    For each site with cases of both classes: the highest threshold on the
    calibrated probability whose sensitivity at that site reaches
    :data:`STABILITY_TARGET_SENSITIVITY`
    (:func:`medvision.calibration.operating_point.threshold_for_sensitivity`), with
    the site's specificity there. A site whose threshold lies far from the
    protocol's says that one operating point does not serve every site alike.
    """
    sites: dict[str, list[Case]] = {}
    for case in cases:
        sites.setdefault(str(case.attributes.get("site") or "unknown"), []).append(case)
    result: dict[str, Any] = {"target_sensitivity": STABILITY_TARGET_SENSITIVITY, "sites": {}}
    for site, members in sorted(sites.items()):
        labels = [c.label for c in members]
        if 0 < sum(labels) < len(labels):
            point = threshold_for_sensitivity(
                [c.probability for c in members],
                labels,
                STABILITY_TARGET_SENSITIVITY,
                confidence,
            )
            result["sites"][site] = {
                "n": len(members),
                "threshold": point.threshold,
                "sensitivity": point.sensitivity,
                "specificity": point.specificity,
            }
        else:
            result["sites"][site] = {"n": len(members), "threshold": None}
    return result


def _failure_rank(failure: dict[str, Any]) -> tuple[int, float, float]:
    """Return the sort key of a failure (see the module docstring: worst first)."""
    if failure["column"] == OVERALL:
        return (0, -math.inf, -float(failure["shortfall"]))
    difference = failure["difference_from_rest"]
    upper = difference["ci_high"] if difference and difference["ci_high"] is not None else math.inf
    return (1, float(upper), -float(failure["shortfall"]))


def failure_line(failure: dict[str, Any]) -> str:
    """Return one line naming a failed criterion, the group and the limit that missed."""
    side, relation = ("upper", ">") if failure["limit"] == "ci_high" else ("lower", "<")
    return (
        f"FAIL {failure['column']} = {failure['value']}: {failure['criterion']} "
        f"({side} bound {failure[failure['limit']]:.3f} {relation} {failure['bound']:.3f})"
    )


def _failure(figures: GroupFigures, criterion: str, bound: float) -> dict[str, Any]:
    name, upper = criterion_figure(criterion)
    figure, difference = figures.metrics[name], figures.differences.get(name)
    return {
        "column": figures.column,
        "value": figures.value,
        "criterion": criterion,
        "figure": name,
        "limit": "ci_high" if upper else "ci_low",
        "ci_low": figure.ci_low,
        "ci_high": figure.ci_high,
        "bound": bound,
        "shortfall": figure.ci_high - bound if upper else bound - figure.ci_low,
        "difference_from_rest": None if difference is None else _estimate(difference),
    }


def _key(case_values: list[str]) -> str:
    return " x ".join(case_values)


def build_report(
    groups: list[GroupFigures],
    inputs: ValidationInputs,
    protocol: Protocol,
    *,
    predictions_sha256: str,
    manifest_sha256: str,
    scans: Sequence[CtScan] | None = None,
    nodule_types: Mapping[str, SegmentationFigures] | None = None,
) -> dict[str, Any]:
    """Return the report's data (see the module docstring) from a run's figures.

    ``scans`` are the CT scans of the segmentation figures, when there are any:
    the report then describes those inputs and gives the whole set's FROC, and
    ``nodule_types`` (:func:`validation.subgroups.detection_by_nodule_type`) the
    detection figures per nodule type.
    """
    columns = [(c,) for c in protocol.subgroups] + list(protocol.intersections)
    members: dict[tuple[str, str], list[Case]] = {(OVERALL, "all"): list(inputs.cases)}
    missing: dict[tuple[str, str], int] = {(OVERALL, "all"): len(inputs.not_analysed)}
    for group in columns:
        name = " x ".join(group)
        for case in inputs.cases:
            value = _key([group_value(case, column, protocol) for column in group])
            members.setdefault((name, value), []).append(case)
        for row in inputs.not_analysed:
            # Only its attributes count: a study not analysed has no prediction.
            unscored = Case(row.study_instance_uid, 0, 0.0, 0, manifest_attributes(row))
            value = _key([group_value(unscored, column, protocol) for column in group])
            missing[(name, value)] = missing.get((name, value), 0) + 1
    subgroups: dict[str, dict[str, Any]] = {}
    overall: dict[str, Any] = {}
    failures: list[dict[str, Any]] = []
    warnings: list[str] = []
    for figures in groups:
        group_key = (figures.column, figures.value)
        data = _group(figures, members.get(group_key, []), missing.get(group_key, 0))
        if figures.column == OVERALL:
            overall = data
        else:
            subgroups.setdefault(figures.column, {})[figures.value] = data
        if figures.underpowered:
            warnings.append(
                f"{figures.column} = {figures.value}: {figures.n} cases, below the minimum of "
                f"{protocol.minimum_subgroup_size}; its criteria are not judged"
            )
        for criterion, verdict in figures.acceptance.items():
            if verdict == Verdict.FAIL:
                failures.append(_failure(figures, criterion, protocol.acceptance[criterion]))
    development = {k: v for k, v in inputs.splits.items() if k in DEVELOPMENT_SPLITS}
    if development:
        listed = ", ".join(f"{count} from '{split}'" for split, count in development.items())
        warnings.append(
            f"{sum(development.values())} cases come from splits used to develop the model "
            f"({listed}): they are not independent test data"
        )
    if len(inputs.models) > 1:
        warnings.append(
            f"the predictions name {len(inputs.models)} different models for the finding: "
            "the figures mix them"
        )
    if inputs.not_analysed:
        warnings.append(
            f"{len(inputs.not_analysed)} studies of the manifest were not analysed "
            "(see input_problems)"
        )
    failures.sort(key=_failure_rank)
    protocol_fields = asdict(protocol)
    protocol_fields["modality"] = protocol.modality.value
    return {
        "format_version": REPORT_FORMAT_VERSION,
        "protocol": protocol_fields,
        "data": {
            "predictions_sha256": predictions_sha256,
            "manifest_sha256": manifest_sha256,
            "cases": len(inputs.cases),
            "not_analysed": len(inputs.not_analysed),
            "clustered_intervals": cluster_identifiers(inputs.cases, protocol) is not None,
            "splits": inputs.splits,
            "reference_standard": f"the manifest's '{protocol.finding}' column (1 present, "
            "0 absent)",
        },
        "models": [asdict(model) for model in inputs.models],
        "overall": overall,
        "subgroups": subgroups,
        "segmentation": (
            None if not scans else _segmentation_block(scans, protocol, nodule_types or {})
        ),
        "acceptance": {"passed": not failures, "failures": failures},
        "operating_point_stability": threshold_stability(inputs.cases, protocol.confidence),
        "input_problems": [
            {"kind": p.kind.value, "count": len(p.where), "action": p.action, "where": p.where}
            for p in inputs.problems
        ],
        "reproducibility": {
            "packages": {name: _version(name) for name in PACKAGES},
            "python": platform.python_version(),
            "seed": 0,
        },
        "warnings": warnings,
    }


def _segmentation_block(
    scans: Sequence[CtScan],
    protocol: Protocol,
    nodule_types: Mapping[str, SegmentationFigures],
) -> dict[str, Any]:
    masks = all(scan.has_segmentation for scan in scans)
    candidates = all(scan.has_detections for scan in scans)
    points = (
        froc_points([scan.detections for scan in scans], protocol.min_nodule_diameter_mm)
        if candidates
        else ()
    )
    return {
        "scans": len(scans),
        "masks": masks,
        "candidates": candidates,
        "min_nodule_diameter_mm": protocol.min_nodule_diameter_mm,
        "max_false_positives_per_scan": protocol.max_false_positives_per_scan,
        "froc": [
            {
                "threshold": p.threshold,
                "sensitivity": _number(p.sensitivity),
                "false_positives_per_scan": p.false_positives_per_scan,
            }
            for p in points
        ],
        "by_nodule_type": {
            kind: {
                "nodules": figures.counts["nodules"],
                "detected": figures.counts["detected"],
                "detection_sensitivity": _estimate(figures.metrics["detection_sensitivity"]),
                "candidate_sensitivity": _estimate(figures.metrics["candidate_sensitivity"]),
            }
            for kind, figures in nodule_types.items()
        },
    }


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def write_report_json(report: dict[str, Any], path: Path) -> None:
    """Write ``report`` as JSON (NaN never appears: missing figures are ``null``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
