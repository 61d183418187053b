"""Tests of the CT nodule Dice, matching and FROC figures on hand-made cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from medvision.data.manifest import ManifestRow
from medvision.evaluation.ct_detection import (
    FrocPoint,
    ScanDetections,
    TruthNodule,
    detected_by_type,
    dice_coefficient,
    dice_losses,
    evaluate_ct_detection,
    froc_points,
    hausdorff_distance_95,
    load_ground_truth,
    match_nodules,
    scan_detections,
    sensitivity_at_false_positives,
)
from medvision.inference.scoring import Location, StudyScore
from medvision.modality import Modality

EMPTY = np.zeros((1, 2, 3), dtype=np.uint8)


def _found(x: float, score: float | None) -> Location:
    return Location(referenced_uid="1.2.3", centre=(x, 0.0, 0.0), diameter_mm=5.0, score=score)


def _truth(x: float, diameter: float) -> TruthNodule:
    return TruthNodule(centre_mm=(x, 0.0, 0.0), diameter_mm=diameter)


def _scans() -> list[ScanDetections]:
    """Three scans: 2 counted nodules (10 and 8 mm), one of 4 mm, four false positives.

    Scan A: a hit on the 10 mm nodule (0.9), a hit on the 4 mm one (0.8, ignored), an FP (0.7).
    Scan B: an FP (0.95) and a hit on the 8 mm nodule (0.6).
    Scan C: no nodule, FPs at 0.85 and 0.65.
    """
    return [
        ScanDetections(
            "A",
            [_found(1.0, 0.9), _found(51.0, 0.8), _found(100.0, 0.7)],
            [_truth(0.0, 10.0), _truth(50.0, 4.0)],
            predicted_mask=np.array([[[1, 0, 0], [0, 1, 0]]]),
            truth_mask=np.array([[[1, 1, 0], [0, 0, 0]]]),
        ),
        ScanDetections(
            "B",
            [_found(20.0, 0.95), _found(-4.0, 0.6)],
            [_truth(0.0, 8.0)],
            predicted_mask=np.array([[[1, 1, 1], [1, 0, 0]]]),
            truth_mask=np.array([[[1, 1, 1], [1, 0, 0]]]),
        ),
        ScanDetections("C", [_found(30.0, 0.85), _found(60.0, 0.65)], [], EMPTY, EMPTY),
    ]


def test_dice_of_two_masks_that_share_one_of_two_voxels_each_is_one_half() -> None:
    assert dice_coefficient([[1, 1, 0], [0, 0, 0]], [[1, 0, 0], [0, 1, 0]]) == 0.5
    assert dice_coefficient([[0, 2]], [[0, 1]]) == 1.0


def test_dice_of_two_empty_masks_is_one() -> None:
    assert dice_coefficient(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0


def test_dice_refuses_masks_of_different_shapes() -> None:
    with pytest.raises(ValueError, match=r"masks differ in shape: predicted \(2,\), ground truth"):
        dice_coefficient([1, 0], [1, 0, 0])


def test_hd95_of_a_cube_and_the_same_cube_shifted_is_the_shift_in_mm() -> None:
    truth = np.zeros((12, 12, 12), dtype=np.uint8)
    truth[2:6, 2:6, 2:6] = 1
    predicted = np.roll(truth, 3, axis=2)  # 3 columns at 0.5 mm
    assert hausdorff_distance_95(predicted, truth, (2.0, 0.7, 0.5)) == pytest.approx(1.5)
    assert hausdorff_distance_95(truth, truth, (2.0, 0.7, 0.5)) == 0.0


def test_hd95_is_undefined_when_a_mask_is_empty_and_refuses_bad_spacing() -> None:
    truth = np.zeros((4, 4, 4), dtype=np.uint8)
    truth[1, 1, 1] = 1
    assert math.isnan(hausdorff_distance_95(np.zeros_like(truth), truth, (1, 1, 1)))
    with pytest.raises(ValueError, match="one positive size per axis"):
        hausdorff_distance_95(truth, truth, (1.0, 1.0))
    with pytest.raises(ValueError, match="one positive size per axis"):
        hausdorff_distance_95(truth, truth, (1.0, 0.0, 1.0))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_hd95_equals_monai_on_random_blobs_with_anisotropic_spacing(seed: int) -> None:
    from monai.metrics.hausdorff_distance import compute_hausdorff_distance
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(2):
        noise = ndimage.gaussian_filter(rng.random((20, 24, 28)), 2.0)
        masks.append(noise > np.quantile(noise, 0.9))
    spacing = (2.5, 0.8, 0.6)
    expected = compute_hausdorff_distance(
        masks[0][None, None].astype(np.float32),
        masks[1][None, None].astype(np.float32),
        include_background=True,
        percentile=95,
        spacing=list(spacing),
    )
    # MONAI's result is float32: equal to its precision.
    assert hausdorff_distance_95(masks[0], masks[1], spacing) == pytest.approx(
        float(expected[0, 0]), rel=1e-6
    )


def test_a_prediction_hits_a_nodule_within_its_radius_boundary_included() -> None:
    hits = match_nodules(
        [(1.0, 0.0, 0.0), (0.0, 3.0, 0.0), (3.0, 0.0, 1.0), (50.0, 0.0, 0.0)],
        [(0.0, 0.0, 0.0), (50.0, 0.0, 0.0)],
        [6.0, 2.0],
    )
    assert hits.tolist() == [[True, False], [True, False], [False, False], [False, True]]


def test_matching_refuses_diameters_that_do_not_fit_the_nodules() -> None:
    with pytest.raises(ValueError, match="2 ground-truth centres but 1 diameters"):
        match_nodules([(0.0, 0.0, 0.0)], [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0)], [4.0])


def test_froc_sweeps_every_score_counting_only_nodules_of_6_mm_and_more() -> None:
    points = froc_points(_scans())
    expected = [
        (0.95, 0.0, 1 / 3),
        (0.9, 0.5, 1 / 3),
        (0.85, 0.5, 2 / 3),
        (0.8, 0.5, 2 / 3),  # hits the 4 mm nodule: neither true nor false positive
        (0.7, 0.5, 3 / 3),
        (0.65, 0.5, 4 / 3),
        (0.6, 1.0, 4 / 3),
    ]
    assert [(p.threshold, p.sensitivity, p.false_positives_per_scan) for p in points] == expected


def test_sensitivity_at_one_false_positive_per_scan_includes_the_boundary() -> None:
    points = froc_points(_scans())
    assert sensitivity_at_false_positives(points, 1.0) == 0.5
    assert sensitivity_at_false_positives(points, 0.3) == 0.0
    assert sensitivity_at_false_positives(points, 2.0) == 1.0
    assert math.isnan(sensitivity_at_false_positives([FrocPoint(0.5, math.nan, 0.0)], 1.0))


def test_evaluation_reports_dice_on_scans_with_a_nodule_and_detection_figures() -> None:
    result = evaluate_ct_detection(_scans())
    assert result.scans == 3
    assert result.dice_per_scan == {"A": 0.5, "B": 1.0}
    assert result.mean_dice == 0.75
    assert (result.nodules, result.detected, result.sensitivity) == (2, 2, 1.0)
    assert result.false_positives_per_scan == 4 / 3
    assert result.sensitivity_at_max_false_positives == 0.5
    assert len(result.froc) == 7


def test_evaluation_without_predictions_detects_nothing() -> None:
    scans = [ScanDetections("A", [], [_truth(0.0, 7.0)], EMPTY, EMPTY)]
    result = evaluate_ct_detection(scans)
    assert (result.nodules, result.detected, result.sensitivity) == (1, 0, 0.0)
    assert result.froc == ()
    assert result.sensitivity_at_max_false_positives == 0.0
    assert result.false_positives_per_scan == 0.0


def test_evaluation_without_nodules_of_6_mm_has_no_sensitivity() -> None:
    scans = [ScanDetections("A", [_found(9.0, 0.7)], [_truth(0.0, 5.0)], EMPTY, EMPTY)]
    result = evaluate_ct_detection(scans)
    assert result.nodules == 0
    assert math.isnan(result.sensitivity)
    assert math.isnan(result.sensitivity_at_max_false_positives)
    assert result.false_positives_per_scan == 1.0
    assert math.isnan(result.mean_dice)


def test_detection_by_type_counts_the_counted_nodules_hit_by_any_prediction() -> None:
    typed = [
        ScanDetections(
            scan.study_instance_uid,
            scan.predicted,
            [
                TruthNodule(n.centre_mm, n.diameter_mm, "solid" if n.diameter_mm == 10.0 else None)
                for n in scan.truth
            ],
            scan.predicted_mask,
            scan.truth_mask,
        )
        for scan in _scans()
    ]
    # The 10 mm nodule (solid) is hit; the 8 mm one (no type) is hit; the 4 mm one is not counted.
    assert detected_by_type(typed) == {"solid": (1, 1), "unknown": (1, 1)}
    missed = [ScanDetections("D", [_found(40.0, 0.9)], [_truth(0.0, 9.0)], EMPTY, EMPTY)]
    assert detected_by_type(missed) == {"unknown": (0, 1)}
    assert detected_by_type(typed, min_diameter_mm=3.0) == {"solid": (1, 1), "unknown": (2, 2)}


def test_dice_losses_split_false_positive_components_misses_and_boundaries() -> None:
    # Scan A: a 4-voxel nodule covered by a 5-voxel component (Dice 8/9), a one-voxel
    # nodule missed, and a 3-voxel false-positive component. Scan B: its only nodule,
    # 4 mm, missed. Scan C: no nodule, so it does not count.
    truth_a = np.zeros((3, 8, 8), dtype=np.uint8)
    truth_a[1, 1:3, 1:3] = 1
    truth_a[1, 6, 6] = 1
    predicted_a = np.zeros_like(truth_a)
    predicted_a[1, 1:3, 1:3] = 1
    predicted_a[1, 3, 1] = 1
    predicted_a[0, 6, 1:4] = 1
    truth_b = np.zeros_like(truth_a)
    truth_b[2, 4, 4:6] = 1
    scans = [
        ScanDetections("A", [], [_truth(0.0, 10.0), _truth(50.0, 5.0)], predicted_a, truth_a),
        ScanDetections("B", [], [_truth(0.0, 4.0)], np.zeros_like(truth_a), truth_b),
        ScanDetections("C", [], [], predicted_a, np.zeros_like(truth_a)),
    ]
    losses = dice_losses(scans)
    assert losses.scans == 2
    assert losses.mean_dice == pytest.approx((8 / 13 + 0.0) / 2)
    assert losses.mean_dice_without_false_positives == pytest.approx((8 / 10 + 0.0) / 2)
    assert (losses.nodules, losses.touched) == (3, 1)
    assert losses.mean_dice_touched == pytest.approx(8 / 9)
    assert (losses.small_scans, losses.mean_dice_small_scans) == (1, 0.0)
    assert losses.mean_dice == pytest.approx(evaluate_ct_detection(scans).mean_dice)


def test_dice_losses_without_touched_nodules_or_small_scans_are_nan() -> None:
    truth = np.zeros((1, 4, 4), dtype=np.uint8)
    truth[0, 0, 0] = 1
    predicted = np.zeros_like(truth)
    predicted[0, 3, 3] = 1
    unannotated = ScanDetections("B", [], [], predicted, truth)  # a mask, no annotations
    losses = dice_losses(
        [ScanDetections("A", [], [_truth(0.0, 8.0)], predicted, truth), unannotated]
    )
    assert (losses.scans, losses.nodules, losses.touched, losses.small_scans) == (2, 2, 0, 0)
    assert (losses.mean_dice, losses.mean_dice_without_false_positives) == (0.0, 0.0)
    assert math.isnan(losses.mean_dice_touched) and math.isnan(losses.mean_dice_small_scans)


def test_evaluation_refuses_no_scans_and_unscored_predictions() -> None:
    with pytest.raises(ValueError, match="no scan to evaluate"):
        evaluate_ct_detection([])
    scans = [ScanDetections("A", [_found(0.0, None)], [], EMPTY, EMPTY)]
    with pytest.raises(ValueError, match="study A: a predicted nodule has no score"):
        evaluate_ct_detection(scans)


def _ground_truth_files(folder: Path) -> ManifestRow:
    annotations = {
        "series": {"series_instance_uid": "1.2.9"},
        "nodules": [
            {"centre_mm_xyz": [1.5, -2.0, -40.0], "diameter_mm": 7.5},
            {"centre_mm_xyz": [9.0, 9.0, -40.0], "diameter_mm": 4.0, "type": "ground_glass"},
        ],
    }
    (folder / "a.json").write_text(json.dumps(annotations), encoding="utf-8")
    mask = np.zeros((2, 2, 3), dtype=np.uint8)
    mask[1, 0, 2] = 1
    np.savez_compressed(folder / "a.npz", **{"1.2.9__nodule": mask})  # type: ignore[arg-type]
    return ManifestRow(
        study_instance_uid="1.2.8",
        modality=Modality.CT,
        path=Path("ct"),
        annotations=Path("a.json"),
        masks=Path("a.npz"),
    )


def test_ground_truth_comes_from_the_annotations_and_the_series_mask(tmp_path: Path) -> None:
    row = _ground_truth_files(tmp_path)
    truth, mask = load_ground_truth(row, tmp_path / "manifest.csv")
    assert truth == [
        TruthNodule(centre_mm=(1.5, -2.0, -40.0), diameter_mm=7.5),
        TruthNodule(centre_mm=(9.0, 9.0, -40.0), diameter_mm=4.0, nodule_type="ground_glass"),
    ]
    assert mask.dtype == np.uint8 and mask.shape == (2, 2, 3) and int(mask.sum()) == 1
    score = StudyScore("1.2.8", {"nodule": 0.0}, {"nodule": []}, {"nodule": mask})
    scan = scan_detections(score, row, tmp_path / "manifest.csv")
    assert dice_coefficient(scan.predicted_mask, scan.truth_mask) == 1.0


def test_ground_truth_refuses_a_row_without_annotations(tmp_path: Path) -> None:
    row = ManifestRow(study_instance_uid="1.2.8", modality=Modality.CT, path=Path("ct"))
    expected = r"study 1\.2\.8: detection evaluation needs the annotations and masks files"
    with pytest.raises(ValueError, match=expected):
        load_ground_truth(row, tmp_path / "manifest.csv")


def test_ground_truth_refuses_annotations_without_nodule_sizes(tmp_path: Path) -> None:
    row = _ground_truth_files(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"series": {"series_instance_uid": "1"}}))
    with pytest.raises(ValueError, match="lack the series UID or nodule centres and diameters"):
        load_ground_truth(row, tmp_path / "manifest.csv")
