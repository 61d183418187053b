"""Segmentation and detection figures of a CT nodule model on held-out scans.

The rules, applied on the source DICOM grid and in patient millimetres:

- **Dice per scan** ``2|P ∩ T| / (|P| + |T|)`` of the predicted and ground-truth
  nodule masks, over the scans whose ground truth holds a nodule (on a scan
  without one Dice only says whether anything was predicted; the false
  positives per scan report that instead). The mean Dice is their mean.
- **HD95 per scan** (95th-percentile Hausdorff distance, mm): the surface voxels
  of a mask are its voxels with a 6-connected neighbour outside it (the volume's
  border counts as outside); the distances in mm from each surface voxel of one
  mask to the nearest surface voxel of the other are taken both ways, and HD95 is
  the larger of the two 95th percentiles (linear interpolation), as MONAI's
  ``compute_hausdorff_distance(percentile=95)`` computes it. It is undefined when
  either mask is empty.
- **Matching** (the LUNA16 rule, Setio et al. 2017): a predicted nodule *hits* a
  ground-truth nodule when its centre lies within the ground-truth nodule's
  radius (half its diameter) of the ground-truth centre.
- **Sensitivity** counts the ground-truth nodules of at least
  :data:`MIN_DIAMETER_MM` (6 mm, below which the Fleischner Society recommends no
  routine follow-up; MacMahon et al. 2017); one is detected when a predicted
  nodule hits it.
- **False positives** are predicted nodules that hit no ground-truth nodule of
  any size; a hit on a nodule below 6 mm is neither a true nor a false positive
  (as LUNA16 treats findings outside its reference set).
- **FROC** (free-response ROC; Chakraborty 1989): the component-score threshold
  is swept over every predicted score; each threshold gives the sensitivity and
  the false positives per scan of the predicted nodules scored at or above it.
  The headline figure is the highest sensitivity at no more than
  :data:`MAX_FALSE_POSITIVES_PER_SCAN` false positive per scan.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import ndimage

from medvision.data.manifest import ManifestRow, resolve
from medvision.inference.scoring import Location, StudyScore

#: Smallest ground-truth nodule (mm) that sensitivity counts.
MIN_DIAMETER_MM = 6.0
#: False positives per scan at which the headline sensitivity is read off the FROC.
MAX_FALSE_POSITIVES_PER_SCAN = 1.0
#: The finding whose masks and locations are evaluated.
NODULE = "nodule"
#: The type under which a nodule of no known attenuation type is counted.
UNKNOWN_NODULE_TYPE = "unknown"


def dice_coefficient(predicted: ArrayLike, truth: ArrayLike) -> float:
    """Return the Dice coefficient ``2|P ∩ T| / (|P| + |T|)`` of two masks.

    Non-zero values count as inside. Two empty masks agree perfectly: 1.0.

    Raises
    ------
    ValueError
        If the masks differ in shape.
    """
    p = np.asarray(predicted) != 0
    t = np.asarray(truth) != 0
    if p.shape != t.shape:
        raise ValueError(f"masks differ in shape: predicted {p.shape}, ground truth {t.shape}")
    total = int(p.sum()) + int(t.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, t).sum()) / total


def _surface(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    eroded = ndimage.binary_erosion(mask, border_value=0)
    return np.asarray(mask & ~eroded, dtype=bool)


def hausdorff_distance_95(
    predicted: ArrayLike, truth: ArrayLike, spacing_mm: Sequence[float]
) -> float:
    """Return the 95th-percentile Hausdorff distance (mm) of two masks; see the module docstring.

    Parameters
    ----------
    predicted, truth
        Masks of one shape; non-zero values count as inside.
    spacing_mm
        Voxel size along each axis of the masks, in mm.

    Returns
    -------
    float
        NaN when either mask is empty.

    Raises
    ------
    ValueError
        If the masks differ in shape or the spacing does not give one positive size
        per axis.
    """
    p = np.asarray(predicted) != 0
    t = np.asarray(truth) != 0
    if p.shape != t.shape:
        raise ValueError(f"masks differ in shape: predicted {p.shape}, ground truth {t.shape}")
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != p.ndim or any(not s > 0 for s in spacing):
        raise ValueError(f"spacing {spacing_mm} is not one positive size per axis of {p.shape}")
    if not p.any() or not t.any():
        return math.nan
    # Every surface voxel lies in the union's bounding box, so distances are the same there.
    box = ndimage.find_objects((p | t).astype(np.uint8))[0]
    p_surface, t_surface = _surface(p[box]), _surface(t[box])
    to_truth = ndimage.distance_transform_edt(~t_surface, sampling=spacing)[p_surface]
    to_predicted = ndimage.distance_transform_edt(~p_surface, sampling=spacing)[t_surface]
    return float(max(np.percentile(to_truth, 95), np.percentile(to_predicted, 95)))


def match_nodules(
    predicted_centres: ArrayLike, truth_centres: ArrayLike, truth_diameters_mm: ArrayLike
) -> NDArray[np.bool_]:
    """Return which predicted nodule hits which ground-truth nodule (the LUNA16 rule).

    Parameters
    ----------
    predicted_centres
        ``(predicted, 3)`` centres in mm.
    truth_centres
        ``(truth, 3)`` centres in mm, same coordinate system.
    truth_diameters_mm
        ``(truth,)`` diameters; a hit is a distance of at most half of it.

    Returns
    -------
    numpy.ndarray
        ``(predicted, truth)`` booleans.

    Raises
    ------
    ValueError
        If the centres are not ``(n, 3)`` or the diameters do not match the truth.
    """
    predicted = np.asarray(predicted_centres, dtype=np.float64).reshape(-1, 3)
    truth = np.asarray(truth_centres, dtype=np.float64).reshape(-1, 3)
    radii = np.asarray(truth_diameters_mm, dtype=np.float64).reshape(-1) / 2.0
    if len(radii) != len(truth):
        raise ValueError(f"{len(truth)} ground-truth centres but {len(radii)} diameters")
    distances = np.linalg.norm(predicted[:, None, :] - truth[None, :, :], axis=-1)
    return distances <= radii[None, :]


@dataclass(frozen=True)
class TruthNodule:
    """A ground-truth nodule: centre (patient LPS mm), diameter (mm) and, where known, type.

    ``nodule_type`` is the attenuation type of the annotations (``solid``,
    ``part_solid``, ``ground_glass``), ``None`` when they do not say.
    """

    centre_mm: tuple[float, float, float]
    diameter_mm: float
    nodule_type: str | None = None


@dataclass(frozen=True)
class ScanDetections:
    """One scan's predicted and ground-truth nodules and masks.

    Attributes
    ----------
    study_instance_uid
        The study.
    predicted
        The model's nodules (centre in LPS mm, ``score``).
    truth
        The ground-truth nodules.
    predicted_mask, truth_mask
        ``(slices, rows, columns)`` on the DICOM grid in InstanceNumber order.
    """

    study_instance_uid: str
    predicted: Sequence[Location]
    truth: Sequence[TruthNodule]
    predicted_mask: NDArray[Any]
    truth_mask: NDArray[Any]


@dataclass(frozen=True)
class FrocPoint:
    """Sensitivity and false positives per scan of predictions scored ``>= threshold``."""

    threshold: float
    sensitivity: float
    false_positives_per_scan: float


@dataclass(frozen=True)
class CtDetectionEvaluation:
    """Segmentation and detection figures (see the module docstring for the rules).

    Attributes
    ----------
    scans
        Scans evaluated.
    dice_per_scan
        Dice per study, for the scans whose ground truth has a nodule.
    mean_dice
        Mean of ``dice_per_scan`` (NaN when no scan has a nodule).
    nodules
        Ground-truth nodules of at least ``min_diameter_mm``.
    detected
        Of those, how many any prediction hits (every predicted nodule kept).
    sensitivity, false_positives_per_scan
        With every predicted nodule kept (the model's own operating point).
    froc
        One point per distinct predicted score, thresholds descending.
    sensitivity_at_max_false_positives
        Highest FROC sensitivity at no more than ``max_false_positives_per_scan``.
    min_diameter_mm, max_false_positives_per_scan
        The settings used.
    """

    scans: int
    dice_per_scan: dict[str, float]
    mean_dice: float
    nodules: int
    detected: int
    sensitivity: float
    false_positives_per_scan: float
    froc: tuple[FrocPoint, ...]
    sensitivity_at_max_false_positives: float
    min_diameter_mm: float = MIN_DIAMETER_MM
    max_false_positives_per_scan: float = MAX_FALSE_POSITIVES_PER_SCAN


def _scores(scan: ScanDetections) -> NDArray[np.float64]:
    scores = [location.score for location in scan.predicted]
    if any(score is None for score in scores):
        raise ValueError(f"study {scan.study_instance_uid}: a predicted nodule has no score")
    return np.array(scores, dtype=np.float64)


@dataclass(frozen=True)
class _Outcomes:
    """Per counted ground-truth nodule the best hitting score (-inf: none); FP and all scores."""

    detection_scores: NDArray[np.float64]
    false_positive_scores: NDArray[np.float64]
    scores: NDArray[np.float64]


def scan_outcomes(
    scan: ScanDetections, min_diameter_mm: float = MIN_DIAMETER_MM
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Return one scan's detection outcomes (see the module docstring for the rules).

    Returns
    -------
    detection_scores
        Per ground-truth nodule of at least ``min_diameter_mm``, the highest score of
        a predicted nodule hitting it; ``-inf`` when none does.
    false_positive_scores
        The scores of the predicted nodules that hit no ground-truth nodule.

    Raises
    ------
    ValueError
        If a predicted nodule has no score.
    """
    scores = _scores(scan)
    hits = match_nodules(
        [location.centre for location in scan.predicted],
        [nodule.centre_mm for nodule in scan.truth],
        [nodule.diameter_mm for nodule in scan.truth],
    )
    detection = [
        float(scores[hits[:, column]].max()) if hits[:, column].any() else -math.inf
        for column, nodule in enumerate(scan.truth)
        if nodule.diameter_mm >= min_diameter_mm
    ]
    return np.array(detection, dtype=np.float64), scores[~hits.any(axis=1)]


def _outcomes(scans: Sequence[ScanDetections], min_diameter_mm: float) -> _Outcomes:
    if not scans:
        raise ValueError("no scan to evaluate")
    detection: list[float] = []
    false_positive: list[float] = []
    every: list[float] = []
    for scan in scans:
        every += _scores(scan).tolist()
        detected, false = scan_outcomes(scan, min_diameter_mm)
        detection += detected.tolist()
        false_positive += false.tolist()
    return _Outcomes(
        np.array(detection, dtype=np.float64),
        np.array(false_positive, dtype=np.float64),
        np.array(every, dtype=np.float64),
    )


def froc_points(
    scans: Sequence[ScanDetections], min_diameter_mm: float = MIN_DIAMETER_MM
) -> tuple[FrocPoint, ...]:
    """Return the FROC points of ``scans``, one per distinct predicted score, descending.

    A ground-truth nodule counts as detected at threshold ``t`` when a predicted
    nodule scored ``>= t`` hits it; a predicted nodule scored ``>= t`` that hits
    no ground-truth nodule is a false positive (see the module docstring).
    Sensitivity is NaN when no ground-truth nodule is counted.

    Raises
    ------
    ValueError
        If ``scans`` is empty or a predicted nodule has no score.
    """
    return _froc(_outcomes(scans, min_diameter_mm), len(scans))


def _froc(outcomes: _Outcomes, scans: int) -> tuple[FrocPoint, ...]:
    detections, false_positives = outcomes.detection_scores, outcomes.false_positive_scores
    return tuple(
        FrocPoint(
            threshold=threshold,
            sensitivity=float(np.mean(detections >= threshold)) if detections.size else math.nan,
            false_positives_per_scan=int(np.sum(false_positives >= threshold)) / scans,
        )
        for threshold in sorted(set(outcomes.scores.tolist()), reverse=True)
    )


def sensitivity_at_false_positives(
    points: Sequence[FrocPoint], max_false_positives_per_scan: float
) -> float:
    """Return the highest FROC sensitivity at ``<= max_false_positives_per_scan``.

    A threshold above every score (keeping nothing: sensitivity 0, no false
    positive) always qualifies, so the result is 0.0 when no point does; NaN
    when the points' sensitivity is undefined (no ground-truth nodule counted).
    """
    if any(math.isnan(p.sensitivity) for p in points):
        return math.nan
    return max(
        (
            p.sensitivity
            for p in points
            if p.false_positives_per_scan <= max_false_positives_per_scan
        ),
        default=0.0,
    )


def counted_types(scan: ScanDetections, min_diameter_mm: float = MIN_DIAMETER_MM) -> list[str]:
    """Return the type of each ground-truth nodule :func:`scan_outcomes` counts, in its order.

    A nodule of no known type is :data:`UNKNOWN_NODULE_TYPE`.
    """
    return [
        nodule.nodule_type or UNKNOWN_NODULE_TYPE
        for nodule in scan.truth
        if nodule.diameter_mm >= min_diameter_mm
    ]


def detected_by_type(
    scans: Sequence[ScanDetections], min_diameter_mm: float = MIN_DIAMETER_MM
) -> dict[str, tuple[int, int]]:
    """Return, per nodule type, how many counted nodules a prediction hits and how many there are.

    Counted and hit as in :func:`scan_outcomes` (any score); a nodule of no known
    type counts under :data:`UNKNOWN_NODULE_TYPE`. Types appear in alphabetical order.

    Raises
    ------
    ValueError
        If a predicted nodule has no score.
    """
    tally: dict[str, tuple[int, int]] = {}
    for scan in scans:
        detected, _ = scan_outcomes(scan, min_diameter_mm)
        for kind, best in zip(counted_types(scan, min_diameter_mm), detected, strict=True):
            hits, total = tally.get(kind, (0, 0))
            tally[kind] = (hits + int(best > -math.inf), total + 1)
    return dict(sorted(tally.items()))


@dataclass(frozen=True)
class DiceLosses:
    """Where the mean Dice of the scans with a nodule is lost.

    A *nodule* here is a 26-connected part of a ground-truth mask; it is
    *touched* when a 26-connected component of the predicted mask overlaps it, and
    its Dice is that of its voxels against the components touching it. A
    *false-positive component* touches no ground-truth voxel.

    Attributes
    ----------
    scans
        Scans whose ground truth holds a nodule.
    mean_dice
        Their mean Dice, as :func:`evaluate_ct_detection` gives it.
    mean_dice_without_false_positives
        The same with every false-positive component removed: what they cost.
    nodules, touched
        Ground-truth nodules, and how many a predicted component touches.
    mean_dice_touched
        Mean Dice of the touched nodules (NaN when none is): what the boundaries cost.
    small_scans
        Scans with annotated nodules, all of them below ``min_diameter_mm``.
    mean_dice_small_scans
        Their mean Dice (NaN when there are none).
    """

    scans: int
    mean_dice: float
    mean_dice_without_false_positives: float
    nodules: int
    touched: int
    mean_dice_touched: float
    small_scans: int
    mean_dice_small_scans: float


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def dice_losses(
    scans: Sequence[ScanDetections], min_diameter_mm: float = MIN_DIAMETER_MM
) -> DiceLosses:
    """Split the loss of mean Dice into false-positive components, missed nodules and boundaries.

    See :class:`DiceLosses`. Only scans whose ground-truth mask holds a voxel count.

    Raises
    ------
    ValueError
        If a scan's masks differ in shape.
    """
    connectivity = ndimage.generate_binary_structure(3, 3)
    served: list[float] = []
    without: list[float] = []
    touched: list[float] = []
    small: list[float] = []
    nodules = 0
    for scan in scans:
        truth = np.asarray(scan.truth_mask) != 0
        if not truth.any():
            continue
        predicted = np.asarray(scan.predicted_mask) != 0
        dice = dice_coefficient(predicted, truth)
        served.append(dice)
        components, _ = ndimage.label(predicted, structure=connectivity)
        true_labels = np.unique(components[truth & predicted])
        without.append(dice_coefficient(np.isin(components, true_labels), truth))
        parts, count = ndimage.label(truth, structure=connectivity)
        nodules += count
        for part in range(1, count + 1):
            nodule = parts == part
            labels = np.unique(components[nodule & predicted])
            if len(labels):
                touched.append(dice_coefficient(np.isin(components, labels), nodule))
        if scan.truth and all(n.diameter_mm < min_diameter_mm for n in scan.truth):
            small.append(dice)
    return DiceLosses(
        scans=len(served),
        mean_dice=_mean(served),
        mean_dice_without_false_positives=_mean(without),
        nodules=nodules,
        touched=len(touched),
        mean_dice_touched=_mean(touched),
        small_scans=len(small),
        mean_dice_small_scans=_mean(small),
    )


def evaluate_ct_detection(
    scans: Sequence[ScanDetections],
    *,
    min_diameter_mm: float = MIN_DIAMETER_MM,
    max_false_positives_per_scan: float = MAX_FALSE_POSITIVES_PER_SCAN,
) -> CtDetectionEvaluation:
    """Return Dice, per-nodule detection and FROC figures of ``scans``.

    Parameters
    ----------
    scans
        Predictions and ground truth of each held-out scan.
    min_diameter_mm
        Smallest ground-truth nodule that sensitivity counts.
    max_false_positives_per_scan
        Where the headline sensitivity is read off the FROC.

    Raises
    ------
    ValueError
        If ``scans`` is empty, a scan's masks differ in shape, or a predicted
        nodule has no score.
    """
    outcomes = _outcomes(scans, min_diameter_mm)
    dice_per_scan = {
        scan.study_instance_uid: dice_coefficient(scan.predicted_mask, scan.truth_mask)
        for scan in scans
        if np.any(scan.truth_mask)
    }
    nodules = len(outcomes.detection_scores)
    detected = int(np.sum(np.isfinite(outcomes.detection_scores)))
    points = _froc(outcomes, len(scans))
    return CtDetectionEvaluation(
        scans=len(scans),
        dice_per_scan=dice_per_scan,
        mean_dice=float(np.mean(list(dice_per_scan.values()))) if dice_per_scan else math.nan,
        nodules=nodules,
        detected=detected,
        sensitivity=detected / nodules if nodules else math.nan,
        false_positives_per_scan=len(outcomes.false_positive_scores) / len(scans),
        froc=points,
        sensitivity_at_max_false_positives=(
            sensitivity_at_false_positives(points, max_false_positives_per_scan)
            if nodules
            else math.nan
        ),
        min_diameter_mm=min_diameter_mm,
        max_false_positives_per_scan=max_false_positives_per_scan,
    )


def annotated_series(row: ManifestRow, manifest: Path) -> str:
    """Return the SeriesInstanceUID of the CT series a study's annotations describe.

    Raises
    ------
    ValueError
        As :func:`load_ground_truth`, for the annotations file.
    """
    return _annotations(row, manifest)[0]


def _annotations(row: ManifestRow, manifest: Path) -> tuple[str, list[TruthNodule]]:
    uid = row.study_instance_uid
    if row.annotations is None or row.masks is None:
        raise ValueError(
            f"study {uid}: detection evaluation needs the annotations and masks files "
            "(manifest columns 'annotations' and 'masks')"
        )
    path = resolve(manifest, row.annotations)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        series_uid = str(document["series"]["series_instance_uid"])
        truth = [
            TruthNodule(
                centre_mm=(
                    float(n["centre_mm_xyz"][0]),
                    float(n["centre_mm_xyz"][1]),
                    float(n["centre_mm_xyz"][2]),
                ),
                diameter_mm=float(n["diameter_mm"]),
                nodule_type=str(n["type"]) if n.get("type") is not None else None,
            )
            for n in document["nodules"]
        ]
    except (OSError, json.JSONDecodeError, KeyError, IndexError, TypeError, ValueError) as error:
        raise ValueError(
            f"study {uid}: annotations {path} lack the series UID or nodule centres and "
            f"diameters ({type(error).__name__}: {error})"
        ) from None
    return series_uid, truth


def load_ground_truth(
    row: ManifestRow, manifest: Path, finding: str = NODULE
) -> tuple[list[TruthNodule], NDArray[np.uint8]]:
    """Return a CT study's ground-truth nodules and mask from its annotations and masks files.

    The annotations JSON (``ManifestRow.annotations``) gives the series
    (``series.series_instance_uid``) and per nodule ``centre_mm_xyz`` (LPS mm) and
    ``diameter_mm`` (and ``type``, where given); the masks NPZ (``ManifestRow.masks``) holds
    ``<SeriesInstanceUID>__<finding>`` as ``(slices, rows, columns)`` in
    InstanceNumber order (the format of :mod:`medvision.synth`).

    Raises
    ------
    ValueError
        If the row has no annotations or masks file, or either lacks what is needed.
    """
    series_uid, truth = _annotations(row, manifest)
    uid = row.study_instance_uid
    assert row.masks is not None  # checked by _annotations
    masks_path = resolve(manifest, row.masks)
    key = f"{series_uid}__{finding}"
    try:
        with np.load(masks_path) as npz:
            if key not in npz.files:
                raise ValueError(f"study {uid}: {masks_path} has no mask {key}")
            mask = np.asarray(npz[key], dtype=np.uint8)
    except (OSError, zipfile.BadZipFile) as error:
        raise ValueError(f"study {uid}: masks file {masks_path} unreadable ({error})") from None
    return truth, mask


def scan_detections(
    score: StudyScore, row: ManifestRow, manifest: Path, finding: str = NODULE
) -> ScanDetections:
    """Pair a scorer's output for a study with the study's ground truth.

    Raises
    ------
    ValueError
        If the score and the row are of different studies, the score has no mask of
        ``finding``, or the ground truth cannot be read (:func:`load_ground_truth`).
    """
    if score.study_instance_uid != row.study_instance_uid:
        raise ValueError(
            f"score of study {score.study_instance_uid} paired with row of {row.study_instance_uid}"
        )
    if finding not in score.masks:
        raise ValueError(f"study {row.study_instance_uid}: the score has no {finding} mask")
    truth, truth_mask = load_ground_truth(row, manifest, finding)
    return ScanDetections(
        study_instance_uid=row.study_instance_uid,
        predicted=list(score.locations.get(finding, [])),
        truth=truth,
        predicted_mask=np.asarray(score.masks[finding]),
        truth_mask=truth_mask,
    )
