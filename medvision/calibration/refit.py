"""Calibrate a registered model and choose its operating thresholds from a manifest.

One path for every model family: the study-level raw scores come from the
family's scorer (:mod:`medvision.inference`), exactly as at inference time, so
what is calibrated is what is served. Per finding:

1. a calibrator is fitted on the ``calibration`` split (temperature, Platt or
   isotonic, chosen by cross-validated ECE with
   :func:`~medvision.calibration.scaling.fit_best_calibrator`; temperature scaling
   alone when a class has too few cases to compare methods);
2. the threshold is chosen on the ``tune`` and ``calibration`` splits together
   (:data:`OPERATING_POINT_SPLITS`) for the target sensitivity
   (:func:`~medvision.calibration.operating_point.threshold_for_sensitivity`).
   Both are held out of gradient training. Pooling them doubles the positives the
   threshold rests on, and it dilutes the optimism of ``tune``: training keeps the
   epoch with the best ``tune`` AUROC. With ``tune`` alone (about 60 positives per
   finding), the bundled chest X-ray and fundus thresholds reached 0.90 on ``tune`` but
   only 0.73-0.82 on ``test`` and on fresh held-out sets; pooled, the held-out
   sensitivity is 0.85-0.92 (docs/training.md, "Operating points"). The threshold
   is a rank statistic of the positives' scores, and the calibrator is monotone, so
   fitting the calibrator on the same ``calibration`` cases does not bias it;
3. ECE and Brier score before (sigmoid of the raw logit) and after calibration are
   reported on the calibration split, and on ``test`` when it has both classes.

A grading model's further cut points then get their thresholds on the same two
splits (:func:`calibrate_grading`, :mod:`medvision.calibration.grade_thresholds`).

Optionally (``per_site``) a calibrator is also fitted per acquiring site that has
enough cases; :func:`calibrator_for_site` picks it at inference time and falls
back to the pooled calibrator for a site not seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.special import expit
from sklearn.metrics import roc_auc_score
from torch import nn
from tqdm.auto import tqdm

from medvision.calibration.grade_thresholds import GradeCalibration, fit_cut_thresholds
from medvision.calibration.metrics import brier_score, expected_calibration_error
from medvision.calibration.operating_point import (
    OperatingPoint,
    operating_point_at,
    threshold_for_sensitivity,
)
from medvision.calibration.scaling import (
    Calibrator,
    TemperatureScaling,
    calibrator_from_dict,
    fit_best_calibrator,
)
from medvision.data.manifest import ManifestRow, labelled_rows
from medvision.evaluation.grading import quadratic_weighted_kappa
from medvision.grading import grade_values, row_grades
from medvision.inference.scoring import PreparedStudy, StudyScore, scorer_for
from medvision.models.registry import ModelEntry
from medvision.transforms.loading import study_item

#: Cross-validation folds when choosing a calibration method.
CALIBRATION_FOLDS = 5

#: Key under a finding's calibration that holds per-site calibrators.
PER_SITE_KEY = "per_site"

#: Splits whose studies the operating threshold is chosen on (pooled).
OPERATING_POINT_SPLITS: tuple[str, ...] = ("tune", "calibration")
#: Below this calibration-split AUROC a finding is reported as not discriminating.
MIN_USEFUL_AUROC = 0.6

#: Batch of prepared studies handed to a scorer at once.
SCORING_BATCH = 16


def fit_calibrator(logits: NDArray[Any], labels: NDArray[Any]) -> Calibrator:
    """Choose and fit a calibrator; with too few cases to compare methods, temperature scaling.

    Comparing methods needs :data:`CALIBRATION_FOLDS` cases of each class; below
    that only the one-parameter temperature scaling (Guo et al. 2017) is fitted.
    """
    positives = int(np.sum(labels))
    if min(positives, len(labels) - positives) < CALIBRATION_FOLDS:
        return TemperatureScaling().fit(logits, labels)
    return fit_best_calibrator(logits, labels, folds=CALIBRATION_FOLDS).calibrator


def calibrator_for_site(entry: ModelEntry, finding: str, site: str = "") -> Calibrator:
    """Return the calibrator of ``finding``: the site's own where one was fitted, else pooled."""
    parameters = dict(entry.calibration[finding])
    per_site = parameters.pop(PER_SITE_KEY, {})
    return calibrator_from_dict(per_site.get(site, parameters) if site else parameters)


def calibrated_probabilities(
    entry: ModelEntry, logits: NDArray[Any], sites: Sequence[str] | None = None
) -> NDArray[np.float64]:
    """Return calibrated probabilities ``(studies, findings)`` for raw ``logits``.

    Parameters
    ----------
    entry
        The model (its ``calibration`` per finding).
    logits
        Raw scores ``(studies, findings)`` in the order of ``entry.findings``.
    sites
        Per study, the acquiring site, to use per-site calibrators where fitted.
    """
    values = np.asarray(logits, dtype=np.float64).reshape(len(logits), len(entry.findings))
    result = np.empty_like(values)
    for column, finding in enumerate(entry.findings):
        if sites is None:
            result[:, column] = calibrator_for_site(entry, finding).transform(values[:, column])
            continue
        for site in sorted(set(sites)):
            rows = np.array([s == site for s in sites])
            calibrator = calibrator_for_site(entry, finding, site)
            result[rows, column] = calibrator.transform(values[rows, column])
    return result


@dataclass(frozen=True)
class SplitScores:
    """Raw scores of one split: ``logits`` and ``labels`` are ``(studies, findings)``.

    ``studies`` holds the scorer's full output (locations, masks) when it was kept;
    ``grade_logits`` is ``(studies, cut points)`` for a grading model (the further
    cut points' logits, :mod:`medvision.grading`), else empty.
    """

    rows: list[ManifestRow]
    logits: NDArray[np.float64]
    labels: NDArray[np.float64]
    studies: tuple[StudyScore, ...] = ()
    grade_logits: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))

    @property
    def sites(self) -> list[str]:
        """The acquiring site of each study."""
        return [row.site for row in self.rows]


def score_rows(
    network: nn.Module,
    entry: ModelEntry,
    rows: Sequence[ManifestRow],
    manifest: Path,
    device: torch.device,
    *,
    progress: bool = True,
    description: str = "scoring",
    keep_studies: bool = False,
) -> SplitScores:
    """Score manifest rows with the model's scorer; labels come from the manifest.

    With ``keep_studies`` the scorer's full outputs (locations, masks) are kept too.

    Raises
    ------
    medvision.dicom.reading.DicomReadError
        If a study cannot be loaded (a manifest for calibration must be clean).
    """
    scorer = scorer_for(entry)
    scores: list[StudyScore] = []
    batch: list[PreparedStudy] = []
    for row in tqdm(rows, desc=description, unit="study", disable=not progress, leave=False):
        batch.append(scorer.prepare(entry, study_item(row, manifest)))
        if len(batch) == SCORING_BATCH:
            scores += scorer.score(network, entry, batch, device)
            batch = []
    if batch:
        scores += scorer.score(network, entry, batch, device)
    logits = np.array([[s.logits[f] for f in entry.findings] for s in scores], dtype=np.float64)
    labels = np.array([[row.labels[f] for f in entry.findings] for row in rows], dtype=np.float64)
    cuts = len(entry.output_names) - len(entry.findings)
    grade_logits = np.array([s.grade_logits for s in scores], dtype=np.float64)
    return SplitScores(
        rows=list(rows),
        logits=logits.reshape(len(rows), len(entry.findings)),
        labels=labels.reshape(len(rows), len(entry.findings)),
        studies=tuple(scores) if keep_studies else (),
        grade_logits=grade_logits.reshape(len(rows), cuts),
    )


@dataclass(frozen=True)
class FindingCalibration:
    """What calibration did for one finding.

    Attributes
    ----------
    method
        The calibrator chosen (``temperature``, ``platt`` or ``isotonic``).
    ece_before, ece_after, brier_before, brier_after
        On the calibration split: raw sigmoid vs calibrated probabilities.
    test_ece, test_brier
        Calibrated, on the test split (``None`` without test cases of both classes).
    operating_point
        The threshold chosen on the :data:`OPERATING_POINT_SPLITS` together and its
        sensitivity/specificity there.
    test_operating_point
        That threshold on ``test`` (``None`` as above).
    sites
        Sites that received their own calibrator.
    auroc
        AUROC of the raw scores on the calibration split: calibration cannot add
        discrimination, so a value near 0.5 means the finding's probabilities say
        nothing whatever the ECE (a constant prediction of the prevalence has ECE 0).
    """

    method: str
    ece_before: float
    ece_after: float
    brier_before: float
    brier_after: float
    operating_point: OperatingPoint
    test_ece: float | None = None
    test_brier: float | None = None
    test_operating_point: OperatingPoint | None = None
    sites: list[str] = field(default_factory=list)
    auroc: float = float("nan")

    @property
    def discriminates(self) -> bool:
        """Whether the raw scores separate the classes at all (AUROC at least 0.6)."""
        return self.auroc >= MIN_USEFUL_AUROC


@dataclass(frozen=True)
class CalibrationOutcome:
    """The recalibrated entry, per finding what calibration did, and the grade's thresholds."""

    entry: ModelEntry
    findings: dict[str, FindingCalibration]
    grading: GradeCalibration | None = None


def _both_classes(labels: NDArray[Any]) -> bool:
    return len(set(labels.tolist())) == 2


def calibrate_model(
    network: nn.Module,
    entry: ModelEntry,
    manifest: Path,
    *,
    device: torch.device,
    target_sensitivity: float = 0.90,
    per_site: bool = False,
    min_site_cases: int = 50,
    progress: bool = True,
    splits: Mapping[str, SplitScores] | None = None,
) -> CalibrationOutcome:
    """Fit calibration and thresholds for ``entry`` on ``manifest`` (see the module docstring).

    Parameters
    ----------
    network
        The model's network (eval mode is set by the scorer).
    entry
        The model; its weights are unchanged, so its SHA-256 stays valid.
    manifest
        Manifest with ``calibration`` and ``tune`` splits of the model's modality.
    device
        Where to run the network.
    target_sensitivity
        Sensitivity each threshold must reach on ``tune`` and ``calibration`` together.
    per_site
        Also fit a calibrator per site with at least ``min_site_cases`` calibration
        cases of which at least :data:`CALIBRATION_FOLDS` are positive and as many negative.
    progress
        Show progress bars while scoring.
    splits
        Already computed scores by split name (skips scoring those splits).

    Returns
    -------
    CalibrationOutcome
        The entry with ``calibration`` and ``thresholds`` replaced, and the report.

    Raises
    ------
    ValueError
        If the calibration or tune split is empty or a finding has no positive or
        no negative case there.
    """
    scored: dict[str, SplitScores] = dict(splits or {})
    for split in ("calibration", "tune", "test"):
        if split in scored:
            continue
        rows = labelled_rows(manifest, entry.modality, split, entry.findings)
        if not rows and split != "test":
            raise ValueError(f"no {entry.modality.value} study in the {split} split of {manifest}")
        scored[split] = score_rows(
            network, entry, rows, manifest, device, progress=progress, description=split
        )
    calibration: dict[str, dict[str, Any]] = {}
    thresholds: dict[str, float] = {}
    report: dict[str, FindingCalibration] = {}
    for column, finding in enumerate(entry.findings):
        logits = scored["calibration"].logits[:, column]
        labels = scored["calibration"].labels[:, column]
        for split in ("calibration", "tune"):
            if not _both_classes(scored[split].labels[:, column]):
                raise ValueError(
                    f"finding {finding}: the {split} split needs positive and negative studies"
                )
        calibrator = fit_calibrator(logits, labels)
        parameters = calibrator.to_dict()
        site_parameters: dict[str, dict[str, Any]] = {}
        if per_site:
            sites = np.array(scored["calibration"].sites)
            for site in sorted(set(sites.tolist())):
                chosen = sites == site
                positives = labels[chosen].sum()
                negatives = chosen.sum() - positives
                if (
                    chosen.sum() >= min_site_cases
                    and min(positives, negatives) >= CALIBRATION_FOLDS
                ):
                    site_parameters[site] = fit_calibrator(logits[chosen], labels[chosen]).to_dict()
            if site_parameters:
                parameters[PER_SITE_KEY] = site_parameters
        calibration[finding] = parameters
        after = calibrator.transform(logits)
        point = threshold_for_sensitivity(
            calibrator.transform(
                np.concatenate([scored[s].logits[:, column] for s in OPERATING_POINT_SPLITS])
            ),
            np.concatenate([scored[s].labels[:, column] for s in OPERATING_POINT_SPLITS]),
            target=target_sensitivity,
        )
        thresholds[finding] = float(point.threshold)
        test = scored["test"]
        test_values: dict[str, Any] = {}
        if len(test.rows) and _both_classes(test.labels[:, column]):
            probabilities = calibrator.transform(test.logits[:, column])
            test_values = {
                "test_ece": expected_calibration_error(probabilities, test.labels[:, column]),
                "test_brier": brier_score(probabilities, test.labels[:, column]),
                "test_operating_point": operating_point_at(
                    probabilities, test.labels[:, column], point.threshold
                ),
            }
        report[finding] = FindingCalibration(
            method=str(parameters["method"]),
            ece_before=expected_calibration_error(expit(logits), labels),
            ece_after=expected_calibration_error(after, labels),
            brier_before=brier_score(expit(logits), labels),
            brier_after=brier_score(after, labels),
            operating_point=point,
            sites=sorted(site_parameters),
            auroc=float(roc_auc_score(labels, logits)),
            **test_values,
        )
    outcome_entry = replace(entry, calibration=calibration, thresholds=thresholds)
    grading = None
    if outcome_entry.grade_scale is not None:
        grading = calibrate_grading(outcome_entry, scored)
        outcome_entry = replace(outcome_entry, grade_thresholds=grading.thresholds)
    return CalibrationOutcome(entry=outcome_entry, findings=report, grading=grading)


def _graded_cases(
    entry: ModelEntry, scored: Mapping[str, SplitScores], splits: Sequence[str]
) -> tuple[NDArray[np.bool_], NDArray[np.float64], list[int]]:
    """Return the splits' findings decisions, cut-point probabilities and true grades."""
    scale = entry.grade_scale
    if scale is None:
        raise ValueError(f"model {entry.name} does not grade")
    column = entry.findings.index(scale.finding)
    logits = np.concatenate([scored[s].logits for s in splits])
    sites = [site for s in splits for site in scored[s].sites]
    probabilities = calibrated_probabilities(entry, logits, sites)[:, column]
    flagged = probabilities >= entry.thresholds[scale.finding]
    cuts = expit(np.concatenate([scored[s].grade_logits for s in splits]))
    truth = [grade for s in splits for grade in row_grades(scored[s].rows, scale, s)]
    return flagged, cuts, truth


def calibrate_grading(entry: ModelEntry, scored: Mapping[str, SplitScores]) -> GradeCalibration:
    """Choose the grade's cut-point thresholds on ``tune`` and ``calibration`` together.

    ``entry`` has its findings' calibration and thresholds already
    (:mod:`medvision.calibration.grade_thresholds`).

    Raises
    ------
    ValueError
        If a study of those splits has no grade in the manifest.
    """
    scale = entry.grade_scale
    if scale is None:
        raise ValueError(f"model {entry.name} does not grade")
    levels = len(scale.levels)
    flagged, cuts, truth = _graded_cases(entry, scored, OPERATING_POINT_SPLITS)
    chosen = fit_cut_thresholds(scale, flagged, cuts, truth)
    at_half = grade_values(scale, flagged, cuts)
    decoded = grade_values(scale, flagged, cuts, chosen)
    test_cases, test_kappa = 0, None
    if "test" in scored and len(scored["test"].rows):
        test_flagged, test_cuts, test_truth = _graded_cases(entry, scored, ("test",))
        test_cases = len(test_truth)
        test_decoded = grade_values(scale, test_flagged, test_cuts, chosen)
        test_kappa = quadratic_weighted_kappa(test_truth, test_decoded, levels)
    return GradeCalibration(
        scale=scale.name,
        thresholds=dict(zip(scale.output_names(), chosen, strict=True)),
        cases=len(truth),
        kappa_at_half=quadratic_weighted_kappa(truth, at_half, levels),
        kappa=quadratic_weighted_kappa(truth, decoded, levels),
        test_cases=test_cases,
        test_kappa=test_kappa,
    )
