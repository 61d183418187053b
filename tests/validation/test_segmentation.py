"""Tests of the segmentation and detection figures per group, on hand-made scans."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from medvision.evaluation.ct_detection import (
    ScanDetections,
    TruthNodule,
    froc_points,
    hausdorff_distance_95,
    sensitivity_at_false_positives,
)
from medvision.inference.scoring import Location
from validation.ct_inputs import CtScan
from validation.segmentation import (
    nodule_type_members,
    scan_figures,
    segmentation_figures,
    sensitivity_at_false_positive_rate,
)

SPACING = (2.0, 1.0, 1.0)
SHAPE = (8, 16, 16)


def _cube(start: int, size: int = 4) -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[2:6, start : start + size, start : start + size] = 1
    return mask


def _scan(
    uid: str,
    truth_mask: np.ndarray,
    predicted_mask: np.ndarray,
    truth: list[TruthNodule],
    candidates: list[tuple[tuple[float, float, float], float]],
) -> CtScan:
    predicted = [Location(uid, centre, score=score) for centre, score in candidates]
    return CtScan(
        ScanDetections(uid, predicted, truth, predicted_mask, truth_mask),
        SPACING,
        has_segmentation=True,
        has_detections=True,
    )


def _scans() -> list[CtScan]:
    nodule = [TruthNodule((10.0, 10.0, 10.0), 8.0)]
    small = [TruthNodule((40.0, 40.0, 40.0), 4.0)]  # below 6 mm: never counted
    empty = np.zeros(SHAPE, dtype=np.uint8)
    return [
        # exact mask; nodule hit at 0.9; one false positive at 0.3
        _scan("a", _cube(4), _cube(4), nodule, [((11.0, 10.0, 10.0), 0.9), ((90, 90, 90), 0.3)]),
        # shifted mask; nodule hit only at 0.2
        _scan("b", _cube(4), _cube(6), nodule, [((10.0, 12.0, 10.0), 0.2)]),
        # nodule, nothing predicted
        _scan("c", _cube(4), empty, nodule, []),
        # no nodule: one false positive at 0.8, a hit on the small nodule at 0.95
        _scan("d", empty, _cube(8), small, [((0, 0, 0), 0.8), ((40.0, 40.0, 41.0), 0.95)]),
    ]


def test_scan_figures_follow_the_rules_scan_by_scan() -> None:
    figures = scan_figures(_scans(), 6.0)
    assert figures.study_instance_uids == ("a", "b", "c", "d")
    assert figures.dice[:3].tolist() == [1.0, 0.25, 0.0]  # b: 16 of 64 voxels shared
    assert math.isnan(figures.dice[3])  # no nodule: no Dice
    assert figures.hd95_mm[0] == 0.0
    assert figures.hd95_mm[1] == pytest.approx(hausdorff_distance_95(_cube(6), _cube(4), SPACING))
    assert np.isnan(figures.hd95_mm[2:]).all()
    assert figures.missed.tolist() == [False, False, True, False]
    assert figures.detection_scores.tolist() == [0.9, 0.2, -math.inf]
    assert figures.detection_scan.tolist() == [0, 1, 2]
    assert figures.false_positive_scores.tolist() == [0.3, 0.8]
    assert figures.false_positive_scan.tolist() == [0, 3]


def test_group_figures_with_their_counts_and_intervals() -> None:
    figures = scan_figures(_scans(), 6.0)
    group = segmentation_figures(
        figures,
        np.ones(4, dtype=bool),
        None,
        max_false_positives_per_scan=0.25,
        confidence=0.95,
    )
    metrics = group.metrics
    assert metrics["dice"].value == pytest.approx((1.0 + 0.25 + 0.0) / 3)
    assert metrics["hd95_mm"].value == pytest.approx(np.median(figures.hd95_mm[:2]))
    # At <= 0.25 FP per scan (1 of 4 scans) the threshold must exceed 0.3: only a's nodule.
    assert metrics["detection_sensitivity"].value == pytest.approx(1 / 3)
    assert metrics["candidate_sensitivity"].value == pytest.approx(2 / 3)
    assert metrics["false_positives_per_scan"].value == pytest.approx(2 / 4)
    for estimate in metrics.values():
        assert estimate.ci_low <= estimate.value <= estimate.ci_high
    assert group.counts == {
        "scans": 4,
        "scans_with_nodule": 3,
        "missed_scans": 1,
        "hd95_scans": 2,
        "nodules": 3,
        "detected": 2,
        "false_positives": 2,
    }
    assert group.denominators["dice"] == 3
    assert group.denominators["detection_sensitivity"] == 3


def _typed_scans() -> list[CtScan]:
    """The scans of :func:`_scans` with typed nodules: a solid, b ground-glass, c solid."""
    types = {"a": "solid", "b": "ground_glass", "c": "solid", "d": "solid"}
    typed = []
    for scan in _scans():
        detections = scan.detections
        truth = [
            replace(n, nodule_type=types[detections.study_instance_uid]) for n in detections.truth
        ]
        typed.append(replace(scan, detections=replace(detections, truth=truth)))
    return typed


def test_nodules_of_one_type_are_read_at_the_whole_sets_operating_point() -> None:
    assert scan_figures(_scans(), 6.0).detection_type == ("unknown",) * 3
    figures = scan_figures(_typed_scans(), 6.0)
    # Scan d's small nodule is not counted, so "solid" comes from a and c only.
    assert figures.detection_type == ("solid", "ground_glass", "solid")
    members = nodule_type_members(figures)
    assert list(members) == ["ground_glass", "solid"]
    assert members["solid"].tolist() == [True, False, True]
    every_scan = np.ones(4, dtype=bool)
    by_type = {
        kind: segmentation_figures(
            figures,
            every_scan,
            None,
            max_false_positives_per_scan=0.25,
            confidence=0.95,
            nodules=nodules,
        )
        for kind, nodules in members.items()
    }
    # The threshold is the whole set's (above 0.3): a's solid nodule (0.9) only.
    solid, ground_glass = by_type["solid"], by_type["ground_glass"]
    assert solid.metrics["detection_sensitivity"].value == pytest.approx(1 / 2)
    assert solid.metrics["candidate_sensitivity"].value == pytest.approx(1 / 2)
    assert ground_glass.metrics["detection_sensitivity"].value == 0.0  # hit at 0.2 only
    assert ground_glass.metrics["candidate_sensitivity"].value == 1.0
    assert (solid.counts["nodules"], solid.counts["detected"]) == (2, 1)
    assert (ground_glass.counts["nodules"], ground_glass.counts["detected"]) == (1, 1)
    # False positives stay those of every scan; Dice and HD95 (per scan) are not given.
    for group in by_type.values():
        assert set(group.metrics) == {
            "detection_sensitivity",
            "candidate_sensitivity",
            "false_positives_per_scan",
        }
        assert group.counts["false_positives"] == 2
        assert group.metrics["false_positives_per_scan"].value == pytest.approx(2 / 4)
        assert group.denominators["detection_sensitivity"] == group.counts["nodules"]


def test_a_group_of_some_scans_counts_only_theirs() -> None:
    figures = scan_figures(_scans(), 6.0)
    members = np.array([True, False, False, True])
    group = segmentation_figures(
        figures, members, None, max_false_positives_per_scan=1.0, confidence=0.95
    )
    assert group.metrics["dice"].value == 1.0
    assert group.metrics["false_positives_per_scan"].value == 1.0
    assert group.counts["nodules"] == 1
    # Scan a is the only scan with a nodule: every resample that draws it gives Dice 1.
    assert (group.metrics["dice"].ci_low, group.metrics["dice"].ci_high) == (1.0, 1.0)


def test_repeated_scans_of_a_patient_widen_the_interval_when_clustered() -> None:
    scans = _scans() * 5
    figures = scan_figures(scans, 6.0)
    members = np.ones(len(scans), dtype=bool)
    alone = segmentation_figures(
        figures, members, None, max_false_positives_per_scan=1.0, confidence=0.95
    )
    # The five copies of each scan are one patient's: only four independent units remain.
    patients = np.array([f"patient {i % 4}" for i in range(len(scans))])
    clustered = segmentation_figures(
        figures, members, patients, max_false_positives_per_scan=1.0, confidence=0.95
    )
    assert clustered.metrics["dice"].value == alone.metrics["dice"].value
    width = {
        name: (g.metrics["dice"].ci_high - g.metrics["dice"].ci_low)
        for name, g in (("alone", alone), ("clustered", clustered))
    }
    assert width["clustered"] > 1.5 * width["alone"]


def test_without_masks_or_candidates_only_the_other_figures_are_given() -> None:
    scans = [
        CtScan(s.detections, s.spacing_mm, has_segmentation=False, has_detections=True)
        for s in _scans()
    ]
    group = segmentation_figures(
        scan_figures(scans, 6.0),
        np.ones(4, dtype=bool),
        None,
        max_false_positives_per_scan=1.0,
        confidence=0.95,
    )
    assert set(group.metrics) == {
        "detection_sensitivity",
        "candidate_sensitivity",
        "false_positives_per_scan",
    }


@pytest.mark.parametrize("seed", range(6))
def test_the_weighted_sensitivity_equals_the_froc_reading_with_unit_weights(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scans = []
    for index in range(int(rng.integers(2, 7))):
        truth = [TruthNodule((100.0 * k, 0.0, 0.0), 10.0) for k in range(int(rng.integers(0, 3)))]
        candidates = [
            # scores on a coarse grid so that ties occur
            Location("s", (100.0 * int(rng.integers(0, 4)), 0.0, 0.0), score=rng.integers(1, 6) / 5)
            for _ in range(int(rng.integers(0, 5)))
        ]
        empty = np.zeros((1, 1, 1), dtype=np.uint8)
        scans.append(ScanDetections(f"s{index}", candidates, truth, empty, empty))
    wrapped = [CtScan(s, (1.0, 1.0, 1.0), True, True) for s in scans]
    figures = scan_figures(wrapped, 6.0)
    for rate in (0.0, 0.5, 1.0, 2.0):
        expected = sensitivity_at_false_positives(froc_points(scans, 6.0), rate)
        if figures.detection_scores.size == 0:
            continue
        got = sensitivity_at_false_positive_rate(
            figures.detection_scores,
            np.ones(figures.detection_scores.size),
            figures.false_positive_scores,
            np.ones(figures.false_positive_scores.size),
            float(len(scans)),
            rate,
        )
        assert got == pytest.approx(expected), (seed, rate)


def test_weights_count_like_copies_of_a_scan() -> None:
    detections = np.array([0.9, 0.4, -math.inf])
    false_positives = np.array([0.6, 0.5])
    # Nodule 2 and false positive 1 come from a scan drawn twice.
    weighted = sensitivity_at_false_positive_rate(
        detections,
        np.array([1.0, 2.0, 1.0]),
        false_positives,
        np.array([2.0, 1.0]),
        4.0,
        0.5,
    )
    copied = sensitivity_at_false_positive_rate(
        np.array([0.9, 0.4, 0.4, -math.inf]),
        np.ones(4),
        np.array([0.6, 0.6, 0.5]),
        np.ones(3),
        4.0,
        0.5,
    )
    assert weighted == copied == pytest.approx(1 / 4)
