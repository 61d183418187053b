"""Held-out acceptance figures of registered models on fresh phantom sets.

For each modality a model of the registry serves, two fresh phantom sets are
generated with a seed no training run uses, every study in the ``test`` split:

- **held-out**: the training sites (``TRAINING_SITES``), new patients and images;
- **shifted**: a site no model was trained on (``SHIFTED_SITE``), with its own
  device mix and population — the domain-shift gap made visible.

Both go through ``medvision.pipeline.analyze`` exactly as ``medvision predict``
runs them. Per finding it reports AUROC, ECE (10 equal-width bins) of the
calibrated probability, and the sensitivity and specificity at the model's
registered threshold with Wilson 95 % intervals, and whether the target
sensitivity (0.90) lies inside that interval. Mammography adds the per-breast
AUROC (left and right breasts pooled as cases); CT adds nodule detection
(sensitivity for nodules of 6 mm or more at no more than 1 false positive per
scan), Dice, and per device and per nodule type (solid, part-solid, ground-glass)
how many of those nodules any kept component hits; and where the mean Dice is lost
(``medvision.evaluation.ct_detection.dice_losses``: the mean Dice without the
false-positive components, the ground-truth nodules a predicted component touches
and their own Dice, and the scans whose nodules are all below 6 mm). A model that
grades (the fundus model's DR grade) adds the quadratic weighted kappa of its grades
against the phantoms' (with a patient-bootstrap 95 % interval), the share graded
exactly and within one grade, the confusion matrix and each cut point's AUROC
(``medvision.evaluation.grading``).

Usage::

    python benchmarks/model_acceptance.py --models medvision/models/weights \
        --out build/acceptance [--modalities cxr fundus mammo ct] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medvision.calibration.metrics import expected_calibration_error
from medvision.calibration.operating_point import operating_point_at
from medvision.data.manifest import ManifestRow
from medvision.evaluation.classification import discrimination
from medvision.evaluation.ct_detection import (
    ScanDetections,
    detected_by_type,
    dice_losses,
    evaluate_ct_detection,
    scan_detections,
)
from medvision.evaluation.grading import grade_agreement, quadratic_weighted_kappa
from medvision.grading import parse_grade, scale_named
from medvision.inference.scoring import StudyScore
from medvision.modality import Modality
from medvision.models.registry import load_registry
from medvision.pipeline import analyze
from medvision.pipeline.results import StudyResult
from medvision.synth.catalogue import site_named
from medvision.synth.generator import SynthConfig, generate
from validation.bootstrap import cluster_bootstrap

#: Sites of the bundled models' training sets (scripts/train_bundled_models.sh).
TRAINING_SITES = (
    "Northfield University Hospital",
    "Riverside Community Clinic",
    "St Brendan's General",
)
#: The site held out of every training set.
SHIFTED_SITE = "Harbourview Medical Centre"
#: Fresh-set seeds (no training run uses them).
HELD_OUT_SEED = 9001
SHIFTED_SEED = 9002
#: Studies per set: (held-out, shifted).
STUDIES = {
    Modality.CXR: (400, 200),
    Modality.FUNDUS: (400, 200),
    Modality.MAMMO: (300, 150),
    Modality.CT: (100, 60),
}
TARGET_SENSITIVITY = 0.90
#: Prevalence of every finding before the site's odds, as in the training sets: the
#: bundled models are calibrated for this enriched phantom population.
PREVALENCE = 0.3


@dataclass
class FindingFigures:
    """Figures of one finding on one set."""

    finding: str
    cases: int
    positives: int
    auroc: float
    ece: float
    threshold: float
    sensitivity: float
    sensitivity_ci: tuple[float, float]
    specificity: float
    specificity_ci: tuple[float, float]
    target_in_ci: bool


@dataclass
class SetFigures:
    """Figures of one model on one phantom set."""

    modality: str
    kind: str
    studies: int
    problems: int
    seconds: float
    findings: list[FindingFigures] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _finding_figures(
    name: str, probabilities: list[float], labels: list[int], threshold: float
) -> FindingFigures:
    scores = discrimination(probabilities, labels)
    point = operating_point_at(probabilities, labels, threshold)
    low, high = point.sensitivity_ci
    return FindingFigures(
        finding=name,
        cases=scores.cases,
        positives=scores.positives,
        auroc=scores.auroc,
        ece=expected_calibration_error(probabilities, labels),
        threshold=threshold,
        sensitivity=point.sensitivity,
        sensitivity_ci=point.sensitivity_ci,
        specificity=point.specificity,
        specificity_ci=point.specificity_ci,
        target_in_ci=low <= TARGET_SENSITIVITY <= high,
    )


def _classifier_figures(
    results: list[StudyResult], rows: dict[str, ManifestRow], figures: SetFigures
) -> None:
    findings = [f.name for f in results[0].findings]
    for name in findings:
        probabilities, labels, thresholds = [], [], set()
        for result in results:
            finding = next(f for f in result.findings if f.name == name)
            probabilities.append(finding.probability)
            labels.append(rows[result.study_instance_uid].labels[name])
            thresholds.add(finding.threshold)
        if len(set(labels)) < 2:
            continue
        figures.findings.append(_finding_figures(name, probabilities, labels, thresholds.pop()))
    grading_figures(results, rows, figures)
    if figures.modality == Modality.MAMMO.value:
        probabilities, labels = [], []
        for result in results:
            for name in ("malignancy_left", "malignancy_right"):
                finding = next(f for f in result.findings if f.name == name)
                probabilities.append(finding.probability)
                labels.append(rows[result.study_instance_uid].labels[name])
        per_breast = discrimination(probabilities, labels)
        figures.extra["per_breast_auroc"] = per_breast.auroc
        figures.extra["breasts"] = per_breast.cases
        figures.extra["malignant_breasts"] = per_breast.positives


def grading_figures(
    results: list[StudyResult], rows: dict[str, ManifestRow], figures: SetFigures
) -> None:
    """Add the grade agreement of a grading model's results to ``figures.extra`` (if any)."""
    graded = [
        (result, finding.grade)
        for result in results
        for finding in result.findings
        if finding.grade is not None
    ]
    if not graded:
        return
    scale = scale_named(graded[0][1].scale, Modality(figures.modality))
    truth = [parse_grade(rows[r.study_instance_uid].extra[scale.name], scale) for r, _ in graded]
    predicted = [grade.value for _, grade in graded]
    agreement = grade_agreement(truth, predicted, [grade.at_least for _, grade in graded], scale)
    interval = cluster_bootstrap(
        lambda given, expected: quadratic_weighted_kappa(expected, given, len(scale.levels)),
        predicted,
        truth,
        [rows[r.study_instance_uid].patient_id or r.study_instance_uid for r, _ in graded],
        seed=0,
    )
    name = scale.name
    figures.extra.update(
        {
            f"{name}_quadratic_kappa": agreement.quadratic_kappa,
            f"{name}_quadratic_kappa_ci": f"{interval.ci_low:.3f}–{interval.ci_high:.3f}",
            f"{name}_exact": agreement.exact,
            f"{name}_within_one": agreement.within_one,
            f"{name}_confusion_rows_true": [list(row) for row in agreement.confusion],
            **{f"{name}_ge_{k}_auroc": v for k, v in agreement.cut_auroc.items()},
        }
    )


def ct_figures(
    results: list[StudyResult], rows: dict[str, ManifestRow], manifest: Path, figures: SetFigures
) -> None:
    """Add the CT detection figures of analysed studies to ``figures.extra``.

    Mean Dice, the sensitivity for nodules of 6 mm or more at no more than one false
    positive per scan and with every kept component, the false positives per scan,
    and the nodules hit per device and per nodule type; ``rows`` are the studies'
    manifest rows by StudyInstanceUID.
    """
    scans = []
    by_device: dict[str, list[ScanDetections]] = {}
    for result in results:
        finding = next(f for f in result.findings if f.name == "nodule")
        score = StudyScore(
            study_instance_uid=result.study_instance_uid,
            logits={},
            locations={"nodule": list(finding.locations)},
            masks={"nodule": finding.mask},
        )
        row = rows[result.study_instance_uid]
        scans.append(scan_detections(score, row, manifest))
        by_device.setdefault(row.manufacturer_model, []).append(scans[-1])
    evaluation = evaluate_ct_detection(scans)
    figures.extra.update(
        {
            "mean_dice": evaluation.mean_dice,
            "nodules_6mm_or_more": evaluation.nodules,
            "sensitivity_at_1_fp_per_scan": evaluation.sensitivity_at_max_false_positives,
            "sensitivity_all_kept": evaluation.sensitivity,
            "false_positives_per_scan_all_kept": evaluation.false_positives_per_scan,
        }
    )
    # Where the misses are: nodules of 6 mm or more hit by any kept component, per device.
    for device, group in sorted(by_device.items()):
        per_device = evaluate_ct_detection(group)
        figures.extra[f"detected_all_kept_{device}"] = (
            f"{per_device.detected} of {per_device.nodules}"
        )
    # And per nodule type (solid, part-solid, ground-glass), as the annotations give it.
    for kind, (hits, total) in detected_by_type(scans).items():
        figures.extra[f"detected_all_kept_{kind}"] = f"{hits} of {total}"
    # Where the mean Dice is lost: false-positive components, missed nodules, boundaries.
    losses = dice_losses(scans)
    figures.extra.update(
        {
            "mean_dice_without_false_positives": losses.mean_dice_without_false_positives,
            "nodules_touched": f"{losses.touched} of {losses.nodules}",
            "mean_dice_of_touched_nodules": losses.mean_dice_touched,
            "scans_with_nodules_only_below_6mm": f"{losses.small_scans} of {losses.scans}",
            "mean_dice_of_those_scans": losses.mean_dice_small_scans,
        }
    )


def evaluate_set(
    modality: Modality, models: Path, folder: Path, kind: str, seed: int, studies: int
) -> SetFigures:
    """Generate one fresh set, analyse it and compute its figures."""
    names = (SHIFTED_SITE,) if kind == "shifted" else TRAINING_SITES
    sites = tuple(site_named(name) for name in names)
    config = SynthConfig(
        (modality,),
        studies,
        seed,
        folder,
        sites=sites,
        prevalence={"*": PREVALENCE},
        split="test",
        workers=0,
    )
    manifest_rows = generate(config, progress=True)
    rows = {row.study_instance_uid: row for row in manifest_rows}
    start = time.perf_counter()
    run = analyze([folder / modality.value], registry=models, progress=True)
    seconds = time.perf_counter() - start
    results = [r for r in run.results if r.modality == modality]
    figures = SetFigures(
        modality=modality.value,
        kind=kind,
        studies=len(results),
        problems=len(run.problems),
        seconds=seconds,
    )
    _classifier_figures(results, rows, figures)
    if modality == Modality.CT:
        ct_figures(results, rows, folder / "manifest.csv", figures)
    return figures


def _format(all_figures: list[SetFigures]) -> str:
    lines = [
        "| modality | set | finding | cases (positive) | AUROC | ECE | threshold "
        "| sensitivity (95 % CI) | specificity (95 % CI) | 0.90 in CI |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for figures in all_figures:
        for f in figures.findings:
            lines.append(
                f"| {figures.modality} | {figures.kind} | {f.finding} | {f.cases} ({f.positives}) "
                f"| {f.auroc:.3f} | {f.ece:.3f} | {f.threshold:.3f} "
                f"| {f.sensitivity:.3f} ({f.sensitivity_ci[0]:.3f}–{f.sensitivity_ci[1]:.3f}) "
                f"| {f.specificity:.3f} ({f.specificity_ci[0]:.3f}–{f.specificity_ci[1]:.3f}) "
                f"| {'yes' if f.target_in_ci else 'no'} |"
            )
    extras = [
        f"- {f.modality} {f.kind}: "
        + ", ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in f.extra.items()
        )
        for f in all_figures
        if f.extra
    ]
    timing = [
        f"- {f.modality} {f.kind}: {f.studies} studies analysed in {f.seconds:.1f} s, "
        f"{f.problems} problem(s)"
        for f in all_figures
    ]
    return "\n".join([*lines, "", *extras, "", *timing])


def main() -> None:
    """Evaluate every requested modality and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--modalities", nargs="*", default=[m.value for m in Modality])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    served = Counter(entry.modality for entry in load_registry(args.models).values())
    all_figures: list[SetFigures] = []
    for text in args.modalities:
        modality = Modality.parse(text)
        if modality not in served:
            print(f"{modality.value}: no model in {args.models}; skipped")
            continue
        if served[modality] > 1:  # a study's findings would come from both, by name
            parser.error(
                f"{served[modality]} {modality.value} models in {args.models}: the figures "
                "are per modality, so put each model in a folder of its own"
            )
        held_out, shifted = STUDIES[modality]
        for kind, seed, studies in (
            ("held-out", HELD_OUT_SEED, held_out),
            ("shifted", SHIFTED_SEED, shifted),
        ):
            folder = args.out / f"{modality.value}-{kind}"
            all_figures.append(evaluate_set(modality, args.models, folder, kind, seed, studies))
            print(_format(all_figures[-1:]), flush=True)
    print(_format(all_figures))
    if args.json:
        args.json.write_text(
            json.dumps([asdict(f) for f in all_figures], indent=2, default=_json_default) + "\n"
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


if __name__ == "__main__":
    main()
