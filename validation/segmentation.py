"""Dice, HD95 and per-nodule detection of a CT segmenter, for any group of scans, with CIs.

Per scan, by the rules of :mod:`medvision.evaluation.ct_detection`: Dice where the
ground truth holds a nodule; HD95 (mm) where both the predicted and the
ground-truth mask hold a voxel; and, per ground-truth nodule of at least the
protocol's ``min_nodule_diameter_mm``, whether a candidate hits it, and which
candidates hit nothing (false positives). For a group of scans:

================================  ================================================
figure                            definition
================================  ================================================
``dice``                          mean Dice over the scans with a nodule
``hd95_mm``                       median HD95 over the scans where it is defined
                                  (a scan with a nodule but no predicted voxel is
                                  counted in ``missed_scans`` instead)
``detection_sensitivity``         the highest FROC sensitivity at no more than the
                                  protocol's ``max_false_positives_per_scan``
``candidate_sensitivity``         sensitivity with every candidate kept
``false_positives_per_scan``      with every candidate kept
================================  ================================================

The detection figures can also be read for the nodules of one attenuation type
(solid, part-solid, ground-glass; :func:`nodule_type_members`): the sensitivities
count only those nodules, at the threshold that all the scans' false positives
set, so each type's sensitivity is read at the same operating point as the whole
set's.

Intervals are percentile bootstrap intervals (1,000 resamples, seed 0) that
resample scans, or patients when the protocol clusters by patient and a patient
has several scans: nodules of one scan, and scans of one patient, are not
independent, so no binomial interval is used. Resamples where a figure is
undefined (no nodule drawn) are left out of its interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from medvision.evaluation.ct_detection import (
    counted_types,
    dice_coefficient,
    hausdorff_distance_95,
    scan_outcomes,
)
from validation.binary import Estimate

if TYPE_CHECKING:  # validation.ct_inputs imports validation.inputs, which imports this
    from validation.ct_inputs import CtScan

#: Bootstrap resamples of the segmentation and detection intervals.
RESAMPLES = 1000
#: Resamples drawn at once.
CHUNK = 100
#: Figures computed from the SEG masks and from the candidates.
MASK_FIGURES: tuple[str, ...] = ("dice", "hd95_mm")
CANDIDATE_FIGURES: tuple[str, ...] = (
    "detection_sensitivity",
    "candidate_sensitivity",
    "false_positives_per_scan",
)


@dataclass(frozen=True)
class ScanFigures:
    """Per-scan outcomes of a set of CT scans, as flat arrays.

    Attributes
    ----------
    study_instance_uids
        One per scan, in order.
    dice, hd95_mm
        Per scan; NaN where undefined (no nodule; an empty mask).
    missed
        Per scan: the ground truth has a nodule and no voxel was predicted.
    detection_scores, detection_scan, detection_type
        Per counted ground-truth nodule: the best hitting score (``-inf``: missed),
        the index of its scan and its attenuation type (``solid``, ``part_solid``,
        ``ground_glass``; :data:`~medvision.evaluation.ct_detection.UNKNOWN_NODULE_TYPE`
        where the annotations do not say).
    false_positive_scores, false_positive_scan
        Per false-positive candidate: its score and the index of its scan.
    masks, candidates
        Whether masks (SEG) and candidates were supplied.
    """

    study_instance_uids: tuple[str, ...]
    dice: NDArray[np.float64]
    hd95_mm: NDArray[np.float64]
    missed: NDArray[np.bool_]
    detection_scores: NDArray[np.float64]
    detection_scan: NDArray[np.int64]
    detection_type: tuple[str, ...]
    false_positive_scores: NDArray[np.float64]
    false_positive_scan: NDArray[np.int64]
    masks: bool
    candidates: bool


def scan_figures(scans: Sequence[CtScan], min_nodule_diameter_mm: float) -> ScanFigures:
    """Return the per-scan outcomes of ``scans`` (see the module docstring)."""
    dice, hd95, missed = [], [], []
    detection, detection_scan, false, false_scan = [], [], [], []
    types: list[str] = []
    for index, scan in enumerate(scans):
        predicted, truth = scan.detections.predicted_mask, scan.detections.truth_mask
        has_nodule = bool(np.any(truth))
        dice.append(dice_coefficient(predicted, truth) if has_nodule else math.nan)
        hd95.append(hausdorff_distance_95(predicted, truth, scan.spacing_mm))
        missed.append(has_nodule and not np.any(predicted))
        detected, false_positives = scan_outcomes(scan.detections, min_nodule_diameter_mm)
        detection += detected.tolist()
        detection_scan += [index] * detected.size
        types += counted_types(scan.detections, min_nodule_diameter_mm)
        false += false_positives.tolist()
        false_scan += [index] * false_positives.size
    return ScanFigures(
        study_instance_uids=tuple(s.detections.study_instance_uid for s in scans),
        dice=np.array(dice, dtype=np.float64),
        hd95_mm=np.array(hd95, dtype=np.float64),
        missed=np.array(missed, dtype=bool),
        detection_scores=np.array(detection, dtype=np.float64),
        detection_scan=np.array(detection_scan, dtype=np.int64),
        detection_type=tuple(types),
        false_positive_scores=np.array(false, dtype=np.float64),
        false_positive_scan=np.array(false_scan, dtype=np.int64),
        masks=all(s.has_segmentation for s in scans) and bool(scans),
        candidates=all(s.has_detections for s in scans) and bool(scans),
    )


def sensitivity_at_false_positive_rate(
    detection_scores: NDArray[np.float64],
    detection_weights: NDArray[np.float64],
    false_positive_scores: NDArray[np.float64],
    false_positive_weights: NDArray[np.float64],
    scans: float,
    max_false_positives_per_scan: float,
) -> float:
    """Return the highest FROC sensitivity at ``<= max_false_positives_per_scan``, weighted.

    With unit weights this equals
    :func:`medvision.evaluation.ct_detection.sensitivity_at_false_positives` over
    the FROC points; the weights (how often a bootstrap resample drew each
    nodule's and candidate's scan) let one resample be evaluated without copying.
    The lowest admissible threshold lies just above the highest false-positive
    score at which the weighted false positives at or above it exceed the allowed
    ``max_false_positives_per_scan * scans``; a nodule counts when its best score
    lies above that score. NaN when the weighted nodules sum to zero.
    """
    nodules = float(detection_weights.sum())
    if nodules == 0.0:
        return math.nan
    order = np.argsort(-false_positive_scores, kind="stable")
    cumulative = np.cumsum(false_positive_weights[order])
    over = np.flatnonzero(cumulative > max_false_positives_per_scan * scans + 1e-12)
    floor = false_positive_scores[order][over[0]] if over.size else -math.inf
    return float(detection_weights[detection_scores > floor].sum() / nodules)


def _weighted_median(values: NDArray[np.float64], weights: NDArray[np.float64]) -> float:
    keep = weights > 0
    if not keep.any():
        return math.nan
    return float(np.median(np.repeat(values[keep], weights[keep].astype(np.int64))))


def _figures_of(
    figures: ScanFigures,
    scan_weights: NDArray[np.float64],
    max_false_positives_per_scan: float,
    nodules: NDArray[np.bool_] | None = None,
) -> dict[str, float]:
    """Return every figure of the scans weighted by ``scan_weights`` (0: not in the set).

    With ``nodules`` (per counted nodule), only those nodules count in the
    sensitivities, every false positive of the scans still counts, and the mask
    figures (per scan, not per nodule) are left out.
    """
    result: dict[str, float] = {}
    if figures.masks and nodules is None:
        has_nodule = ~np.isnan(figures.dice)
        weight = float(scan_weights[has_nodule].sum())
        result["dice"] = (
            float(scan_weights[has_nodule] @ figures.dice[has_nodule]) / weight
            if weight
            else math.nan
        )
        defined = ~np.isnan(figures.hd95_mm)
        result["hd95_mm"] = _weighted_median(figures.hd95_mm[defined], scan_weights[defined])
    if figures.candidates:
        detection_weights = scan_weights[figures.detection_scan]
        if nodules is not None:
            detection_weights = detection_weights * nodules
        false_weights = scan_weights[figures.false_positive_scan]
        scans = float(scan_weights.sum())
        counted = float(detection_weights.sum())
        result["detection_sensitivity"] = sensitivity_at_false_positive_rate(
            figures.detection_scores,
            detection_weights,
            figures.false_positive_scores,
            false_weights,
            scans,
            max_false_positives_per_scan,
        )
        found = np.isfinite(figures.detection_scores)
        result["candidate_sensitivity"] = (
            float(detection_weights[found].sum()) / counted if counted else math.nan
        )
        result["false_positives_per_scan"] = float(false_weights.sum()) / scans
    return result


@dataclass(frozen=True)
class SegmentationFigures:
    """A group's segmentation and detection figures, their denominators and counts."""

    metrics: dict[str, Estimate]
    denominators: dict[str, int]
    counts: dict[str, int]


def segmentation_figures(
    figures: ScanFigures,
    members: NDArray[np.bool_],
    clusters: NDArray[np.str_] | None,
    *,
    max_false_positives_per_scan: float,
    confidence: float,
    seed: int = 0,
    nodules: NDArray[np.bool_] | None = None,
) -> SegmentationFigures:
    """Return the figures of the member scans with percentile bootstrap intervals.

    Parameters
    ----------
    figures
        Per-scan outcomes of every scan (:func:`scan_figures`).
    members
        Which scans form the group.
    clusters
        Per scan, its cluster (patient) when intervals must resample patients, else
        ``None`` (each scan its own cluster).
    max_false_positives_per_scan, confidence, seed
        Where the detection sensitivity is read off the FROC; interval level; seed.
    nodules
        Per counted nodule, whether it counts in the sensitivities (e.g. the nodules
        of one type, :func:`nodule_type_members`); ``None``: all of them. False
        positives are those of the member scans either way; with ``nodules`` the
        mask figures (Dice, HD95: per scan) are not given.
    """
    weights = members.astype(np.float64)
    values = _figures_of(figures, weights, max_false_positives_per_scan, nodules)
    in_group = np.flatnonzero(members)
    identifiers = clusters[in_group] if clusters is not None else in_group.astype(str)
    _, cluster_of_scan = np.unique(identifiers, return_inverse=True)
    count = int(cluster_of_scan.max()) + 1 if in_group.size else 0
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {name: [] for name in values}
    for start in range(0, RESAMPLES if count else 0, CHUNK):
        size = min(CHUNK, RESAMPLES - start)
        cluster_weights = rng.multinomial(count, np.full(count, 1.0 / count), size=size)
        for drawn in cluster_weights:
            resampled = np.zeros(members.size, dtype=np.float64)
            resampled[in_group] = drawn[cluster_of_scan]
            for name, value in _figures_of(
                figures, resampled, max_false_positives_per_scan, nodules
            ).items():
                draws[name].append(value)
    alpha = (1.0 - confidence) / 2.0
    metrics: dict[str, Estimate] = {}
    for name, value in values.items():
        finite = np.array([d for d in draws[name] if not math.isnan(d)], dtype=np.float64)
        if math.isnan(value) or finite.size == 0:
            metrics[name] = Estimate(math.nan, math.nan, math.nan)
        else:
            low, high = np.quantile(finite, [alpha, 1.0 - alpha])
            metrics[name] = Estimate(value, float(low), float(high))
    has_nodule = members & ~np.isnan(figures.dice)
    counted = members[figures.detection_scan]
    if nodules is not None:
        counted = counted & nodules
    counts = {
        "scans": int(members.sum()),
        "scans_with_nodule": int(has_nodule.sum()),
        "missed_scans": int((members & figures.missed).sum()),
        "hd95_scans": int((members & ~np.isnan(figures.hd95_mm)).sum()),
        "nodules": int(counted.sum()),
        "detected": int((counted & np.isfinite(figures.detection_scores)).sum()),
        "false_positives": int(members[figures.false_positive_scan].sum()),
    }
    denominators = {
        "dice": counts["scans_with_nodule"],
        "hd95_mm": counts["hd95_scans"],
        "detection_sensitivity": counts["nodules"],
        "candidate_sensitivity": counts["nodules"],
        "false_positives_per_scan": counts["scans"],
    }
    return SegmentationFigures(metrics, denominators, counts)


def nodule_type_members(figures: ScanFigures) -> dict[str, NDArray[np.bool_]]:
    """Return, per nodule type present, which counted nodules are of it (types sorted)."""
    types = np.array(figures.detection_type, dtype=object)
    return {kind: types == kind for kind in sorted(set(figures.detection_type))}
